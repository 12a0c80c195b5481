// A Web Worker that runs encoder.js for the page: the split model's features off the main thread,
// one worker per core. Messages: {type: "init", enc, table, wasm} once (wasm: hashgrid.wasm's bytes, or
// null: the JS lookup; a kernel that does not compile, e.g. WebAssembly without SIMD, leaves the JS
// lookup too), then {id, o, d, cells, shared, counts, index} (compact rays; cells: apply the empty-space
// grid). The features of all workers go side by side into the SharedArrayBuffer shared, one ONNX Runtime
// call's input: worker index posts its number of hits in counts[index] (Int32Array on shared memory,
// -1 until then) and writes after the hits of the workers before it, waiting for their counts (Atomics).
// Replies {id, hit, hits, ms, waitMs}.
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
    try {
      kernel = m.wasm ? wasmKernel(m.wasm, table) : null;
    } catch {
      kernel = null;
    }
    self.postMessage({ type: "ready", wasm: Boolean(kernel) });
    return;
  }
  const n = m.o.length / 3;
  const rows = new Int32Array(n);
  for (let i = 0; i < n; i++) rows[i] = i;
  const t0 = performance.now();
  let waitMs = 0;
  const place = (hits) => {
    Atomics.store(m.counts, m.index, hits);
    Atomics.notify(m.counts, m.index);
    const tw = performance.now();
    let row = 0;
    for (let w = 0; w < m.index; w++) {
      Atomics.wait(m.counts, w, -1);
      row += Atomics.load(m.counts, w);
    }
    waitMs = performance.now() - tw;
    return new Float32Array(m.shared, 4 * row * enc.in_dim, hits * enc.in_dim);
  };
  try {
    const { hit } = encodeRays(m.o, m.d, rows, enc, table, m.cells ? cells : null, kernel, place);
    self.postMessage({ id: m.id, hit, hits: Atomics.load(m.counts, m.index),
      ms: performance.now() - t0 - waitMs, waitMs }, [hit.buffer]);
  } catch (exc) { // the workers after this one must not wait for its count forever
    if (Atomics.compareExchange(m.counts, m.index, -1, 0) === -1) Atomics.notify(m.counts, m.index);
    self.postMessage({ id: m.id, error: String(exc && exc.message ? exc.message : exc) });
  }
};
