// A Web Worker that runs encoder.js for the page: the split model's features off the main thread,
// one worker per core. Messages: {type: "init", enc, table, wasm} once (wasm: hashgrid.wasm's bytes, or
// null: the JS lookup), then {id, o, d, cells} (compact rays; cells: apply the empty-space grid).
// Replies {id, features (hit rays only), hit, ms}.
import { decodeCells } from "./camera.js";
import { encodeRays, wasmKernel } from "./encoder.js";

let enc = null;
let table = null;
let cells = null;
let kernel = null;

self.onmessage = (ev) => {
  const m = ev.data;
  if (m.type === "init") {
    enc = m.enc;
    table = new Float32Array(m.table);
    cells = enc.occupancy ? decodeCells(enc.occupancy) : null;
    kernel = m.wasm ? wasmKernel(m.wasm, table) : null;
    self.postMessage({ type: "ready" });
    return;
  }
  const n = m.o.length / 3;
  const rows = new Int32Array(n);
  for (let i = 0; i < n; i++) rows[i] = i;
  const t0 = performance.now();
  const { features, hit } = encodeRays(m.o, m.d, rows, enc, table, m.cells ? cells : null, kernel);
  self.postMessage({ id: m.id, features, hit, ms: performance.now() - t0 }, [features.buffer, hit.buffer]);
};
