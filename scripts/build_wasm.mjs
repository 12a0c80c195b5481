// Compile the viewer's WebAssembly kernels (export/viewer/web/*.wat) into the .wasm files the page loads, with
// wabt from npm (a devDependency of export/viewer/web/package.json). Run from the repository root:
//   node scripts/build_wasm.mjs           write export/viewer/web/<name>.wasm
//   node scripts/build_wasm.mjs --check   exit 1 if a committed .wasm differs from its source
import fs from "fs";
import path from "path";
import { createRequire } from "module";

const web = path.resolve("export/viewer/web");
const require = createRequire(path.join(web, "package.json"));
const wabt = await require("wabt")();
const check = process.argv.includes("--check");
let stale = 0;
for (const name of fs.readdirSync(web).filter((f) => f.endsWith(".wat"))) {
  const source = path.join(web, name);
  const module = wabt.parseWat(name, fs.readFileSync(source, "utf8"));
  module.validate();
  const bytes = Buffer.from(module.toBinary({ log: false, write_debug_names: false }).buffer);
  const target = source.replace(/\.wat$/, ".wasm");
  if (check) {
    if (!fs.existsSync(target) || !fs.readFileSync(target).equals(bytes)) {
      console.error(`${target}: differs from ${name} (run node scripts/build_wasm.mjs)`);
      stale++;
    }
  } else {
    fs.writeFileSync(target, bytes);
    console.log(`${target}: ${bytes.length} bytes`);
  }
}
process.exit(stale ? 1 : 0);
