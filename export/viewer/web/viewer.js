// The web viewer: an exported light field on onnxruntime-web, orbit/zoom/pan, progressive quality. A ray
// model gets its rays from this page (a split model its features too: encoder.js); an image model gets
// the camera and draws the whole frame in one call (image.js). Written into a viewer folder by
// `python -m export.viewer` beside models.json, the ONNX files and the onnxruntime-web runtime files; no
// network access beyond that folder.
import { encodeRays, wasmKernel } from "./encoder.js";
import {
  clampView, decodeCells, median, orbitPose, panTarget, parseQuery, raysCrossCells, raysFromCamera, raysMeetBox, rigOf,
  rigView, scaleIntrinsics,
} from "./camera.js";
import { imageFeeds, imageModelFor, menuModels, writeImage } from "./image.js";
import { loadRuntime } from "./provider.js";

const canvas = document.getElementById("view");
const ctx = canvas.getContext("2d", { willReadFrequently: true });
const hud = document.getElementById("hud");
const errorLine = document.getElementById("error");
const selector = document.getElementById("variant");
const DEFAULT_BATCH = 4096; // rays per inference call (dynamic-batch models)
// rays per encoding batch of a split model: a 200x200 frame in one batch (measured: 80 ms against 100
// for 16k-ray batches encoded while the MLP runs on the previous one: the overlap only makes the
// encoding workers and ONNX Runtime's threads share two cores, and costs more calls)
const SPLIT_BATCH = 65536;
const COARSE = 0.25; // resolution of the frames drawn while the camera moves
const IDLE_MS = 120; // no input for this long: draw at full resolution

const state = { wasm: null, kernel: null, cells: null, encCells: null, useCells: true, workerMs: 0, encodeMs: 0, modelMs: 0, workers: [], table: null, session: null, entry: null, ep: "wasm", threads: 1, busy: false, dirty: true, full: false,
  lastInput: 0, frames: 0, fpsTimes: [], shared: [null, null], counts: [null, null], slot: 0 };

function showError(message) {
  errorLine.textContent = message;
  errorLine.hidden = false;
  canvas.dataset.error = message;
}

async function openSession(entry) {
  state.cells = entry.meta.occupancy ? decodeCells(entry.meta.occupancy) : null;
  state.encCells = entry.kind === "split" && entry.encoder.occupancy ? decodeCells(entry.encoder.occupancy) : null;
  if (entry.kind === "split") { // the feature table of the JS encoding
    const resp = await fetch(entry.table);
    const bytes = resp.ok ? await resp.arrayBuffer() : new ArrayBuffer(0);
    const g = entry.encoder.grid;
    if (bytes.byteLength !== 4 * g.offsets[g.offsets.length - 1] * g.n_features) {
      throw new Error(`${entry.table}: feature table missing or of the wrong size (${bytes.byteLength} bytes)`);
    }
    state.table = new Float32Array(bytes);
    // the WebAssembly lookup (about 2.5x the JS one); without it (no file, no WebAssembly) the JS lookup
    try {
      const wasm = await fetch("hashgrid.wasm");
      state.wasm = wasm.ok ? await wasm.arrayBuffer() : null;
      state.kernel = state.wasm ? wasmKernel(state.wasm, state.table) : null;
    } catch {
      state.wasm = null;
      state.kernel = null;
    }
  }
  try {
    // state.ep alone (its nodes ONNX Runtime cannot run there go to its CPU kernels): data-provider is true.
    // No spinning threads after a run: they would take the cores from the encoding workers
    return await ort.InferenceSession.create(entry.file, { executionProviders: [state.ep], graphOptimizationLevel: "all",
      extra: { session: { intra_op: { allow_spinning: "0" } } } });
  } catch (exc) {
    const first = String(exc && exc.message ? exc.message : exc).split("\n")[0].slice(0, 200);
    const hint = state.ep === "webgpu" ? "; ep=wasm runs it on WebAssembly" : "";
    throw new Error(`${entry.file}: the model failed to load (${first})${hint}`);
  }
}

function writePixels(pixels, idx, start, rgb, m, keep) {
  for (let r = 0; r < m; r++) {
    if (keep && !keep[start + r]) continue;
    const p = 4 * idx[start + r];
    for (let c = 0; c < 3; c++) {
      const v = rgb[3 * r + c];
      pixels[p + c] = Math.floor((v < 0 ? 0 : v > 1 ? 1 : v) * 255 + 0.5);
    }
  }
}

/**
 * Encoding workers for a split model (one per thread); none when workers cannot start or the page has
 * no shared memory (not cross-origin isolated: then it runs on one thread anyway): then the main thread.
 */
async function startWorkers(entry, n) {
  for (const w of state.workers) w.terminate();
  state.workers = [];
  if (n < 2 || typeof Worker === "undefined" || typeof SharedArrayBuffer === "undefined") return;
  try {
    const workers = Array.from({ length: n }, () => new Worker("encode_worker.js", { type: "module" }));
    await Promise.all(workers.map((w) => new Promise((resolve, reject) => {
      w.onmessage = (ev) => (ev.data.type === "ready" ? resolve() : reject(new Error("worker did not start")));
      w.onerror = (ev) => reject(new Error(ev.message || "worker failed"));
      w.postMessage({ type: "init", enc: entry.encoder, table: state.table.buffer.slice(0),
        wasm: state.wasm ? state.wasm.slice(0) : null });
    })));
    state.workers = workers;
  } catch {
    state.workers = [];
  }
}

function runWorker(worker, message) {
  return new Promise((resolve, reject) => {
    worker.onmessage = (ev) => (ev.data.error ? reject(new Error(`encoding worker: ${ev.data.error}`))
      : resolve(ev.data));
    worker.postMessage(message, [message.o.buffer, message.d.buffer]);
  });
}

/**
 * Features of rays rows (interleaved over the workers, or on this thread): {features, parts}, features
 * [hits * in_dim] holding the rays kept (the empty-space grid applied, unless cells=0) of parts in
 * order, each part {hit, rows, ms}: hit[r] set where rows[r] is kept. The workers write into a
 * SharedArrayBuffer side by side (no copy to this thread, one ONNX Runtime call); two of them in turn,
 * as the next batch is encoded while ONNX Runtime reads this one.
 */
async function encodeBatch(o, d, rows) {
  const enc = state.entry.encoder;
  const n = state.workers.length;
  const cells = state.useCells ? state.encCells : null;
  if (!n) {
    const { features, hit } = encodeRays(o, d, rows, enc, state.table, cells, state.kernel);
    return { features, parts: [{ hit, rows }] };
  }
  const slot = state.slot = 1 - state.slot;
  const bytes = 4 * rows.length * enc.in_dim; // room for every ray
  if (!state.shared[slot] || state.shared[slot].byteLength < bytes) state.shared[slot] = new SharedArrayBuffer(bytes);
  if (!state.counts[slot] || state.counts[slot].length < n) state.counts[slot] = new Int32Array(new SharedArrayBuffer(4 * n));
  const shared = state.shared[slot], counts = state.counts[slot];
  counts.fill(-1);
  const parts = [];
  for (let w = 0; w < n; w++) { // every n-th ray: the workers get as many hits as each other
    const part = new Int32Array(Math.ceil((rows.length - w) / n));
    for (let r = 0; r < part.length; r++) part[r] = rows[w + r * n];
    if (!part.length) { counts[w] = 0; continue; }
    const op = new Float32Array(part.length * 3), dp = new Float32Array(part.length * 3);
    for (let r = 0; r < part.length; r++) {
      const i = 3 * part[r];
      op[3 * r] = o[i]; op[3 * r + 1] = o[i + 1]; op[3 * r + 2] = o[i + 2];
      dp[3 * r] = d[i]; dp[3 * r + 1] = d[i + 1]; dp[3 * r + 2] = d[i + 2];
    }
    const message = { id: 0, o: op, d: dp, cells: Boolean(cells), shared, counts, index: w };
    parts.push(runWorker(state.workers[w], message).then((res) => ({ ...res, rows: part })));
  }
  const done = await Promise.all(parts);
  const hits = done.reduce((sum, p) => sum + p.hits, 0);
  return { features: new Float32Array(shared, 0, hits * enc.in_dim), parts: done };
}

/**
 * Split model: features in JS (encoder.js, in workers), the MLP in ONNX Runtime on the rays the
 * encoder kept; the others keep the background. The next batch is encoded while the MLP runs on this one.
 */
async function shadeSplit(o, d, idx, pixels, batch) {
  const inDim = state.entry.encoder.in_dim;
  let next = idx.length ? encodeBatch(o, d, idx.subarray(0, batch)) : null;
  let evaluated = 0;
  for (let start = 0; start < idx.length; start += batch) {
    const tw = performance.now();
    const { features, parts } = await next;
    const t1 = performance.now();
    state.encodeMs += t1 - tw; // time spent waiting for features
    state.workerMs += Math.max(...parts.map((p) => p.ms || 0)); // the slowest worker's encoding time
    const after = start + batch;
    next = after < idx.length ? encodeBatch(o, d, idx.subarray(after, Math.min(after + batch, idx.length))) : null;
    const m = features.length / inDim;
    if (m) { // one call over the hits of all parts, in order
      const out = await state.session.run({ features: new ort.Tensor("float32", features, [m, inDim]) });
      const rgb = out.rgb.data;
      let q = 0;
      for (const { hit, rows } of parts) {
        for (let r = 0; r < rows.length; r++) {
          if (!hit[r]) continue;
          const p = 4 * rows[r];
          for (let c = 0; c < 3; c++) {
            const v = rgb[3 * q + c];
            pixels[p + c] = Math.floor((v < 0 ? 0 : v > 1 ? 1 : v) * 255 + 0.5);
          }
          q++;
        }
      }
      evaluated += m;
    }
    state.modelMs += performance.now() - t1;
  }
  return evaluated;
}

/**
 * Colours of the rays that meet the content box, in batches; the others keep the background. A
 * forward-facing (ndc) model has no misses: every ray goes to the model. A split model's encoder runs
 * the graph's exact box and empty-space tests on every ray itself (in the workers: encoder.js), so
 * this thread tests nothing for it.
 */
async function shade(o, d, pixels, meta, batch) {
  const n = o.length / 3;
  const skip = meta.content_aabb && meta.ray_space !== "ndc" && state.entry.kind !== "split";
  const tPrep = performance.now();
  const hit = skip ? raysMeetBox(o, d, meta.content_aabb, meta.near, meta.far) : new Uint8Array(n).fill(1);
  if (skip && state.cells && state.useCells) {
    // rays whose K points all lie in empty cells: the background. A whole graph decides that itself, so
    // the page skips only what it surely gives the background (a test widened by 1e-3 cells)
    raysCrossCells(o, d, hit, meta.content_aabb, meta.near, meta.far, meta.student.n_points, state.cells, 1e-3);
  }
  let count = 0;
  for (let i = 0; i < n; i++) count += hit[i];
  canvas.dataset.prepMs = String(performance.now() - tPrep); // the box and empty-space tests
  const idx = new Int32Array(count);
  if (state.entry.kind === "split") {
    for (let i = 0, j = 0; i < n; i++) if (hit[i]) idx[j++] = i;
    return shadeSplit(o, d, idx, pixels, batch || SPLIT_BATCH);
  }
  const oh = new Float32Array(count * 3), dh = new Float32Array(count * 3);
  for (let i = 0, j = 0; i < n; i++) {
    if (!hit[i]) continue;
    idx[j] = i;
    oh.set(o.subarray(3 * i, 3 * i + 3), 3 * j);
    dh.set(d.subarray(3 * i, 3 * i + 3), 3 * j);
    j++;
  }
  const step = meta.batch || batch || DEFAULT_BATCH;
  for (let start = 0; start < count; start += step) {
    const m = Math.min(step, count - start);
    const rows = meta.batch || m; // a static model takes exactly its batch: pad the tail
    let ob = oh.subarray(3 * start, 3 * (start + m)), db = dh.subarray(3 * start, 3 * (start + m));
    if (rows > m) {
      const op = new Float32Array(rows * 3), dp = new Float32Array(rows * 3);
      op.set(ob); dp.set(db);
      for (let r = m; r < rows; r++) { op.set(ob.subarray(3 * (m - 1), 3 * m), 3 * r); dp.set(db.subarray(3 * (m - 1), 3 * m), 3 * r); }
      ob = op; db = dp;
    }
    const t1 = performance.now();
    const out = await state.session.run({
      rays_o: new ort.Tensor("float32", ob, [rows, 3]),
      rays_d: new ort.Tensor("float32", db, [rows, 3]),
    });
    state.modelMs += performance.now() - t1;
    writePixels(pixels, idx, start, out.rgb.data, m, null);
  }
  return count;
}

/** An image model's frame (at its output size): one session.run from the camera to the whole image. */
async function renderImage(pose) {
  const [h, w] = state.entry.meta.output_size;
  const { c2w, K } = imageFeeds(pose, state.entry.meta);
  const t1 = performance.now();
  const out = await state.session.run({ c2w: new ort.Tensor("float32", c2w, [4, 4]), K: new ort.Tensor("float32", K, [3, 3]) });
  canvas.dataset.modelMs = String(performance.now() - t1);
  const image = new ImageData(w, h);
  writeImage(out.rgb.data, image.data);
  return { image, rays: null };
}

/** Render pose at w x h into an ImageData (an image model: at its output size, which w x h is). */
async function render(pose, w, h, batch) {
  if (state.entry.meta.decoder === "image") return renderImage(pose);
  const meta = state.entry.meta;
  const K = scaleIntrinsics(meta.K, meta.image_size, h, w);
  const { o, d } = raysFromCamera(pose, K, h, w);
  const image = new ImageData(w, h);
  const px = image.data;
  const bg = meta.background.map((v) => Math.floor(Math.min(Math.max(v, 0), 1) * 255 + 0.5));
  for (let p = 0; p < px.length; p += 4) { px[p] = bg[0]; px[p + 1] = bg[1]; px[p + 2] = bg[2]; px[p + 3] = 255; }
  state.encodeMs = 0;
  state.modelMs = 0;
  state.workerMs = 0;
  const tShade = performance.now();
  const rays = await shade(o, d, px, meta, batch);
  canvas.dataset.shadeMs = String(performance.now() - tShade);
  canvas.dataset.workerMs = String(state.workerMs);
  canvas.dataset.encodeMs = String(state.encodeMs); // of the last frame: JS encoding (split models) and ONNX Runtime
  canvas.dataset.modelMs = String(state.modelMs);
  return { image, rays };
}

function updateHud(ms, rays, w, h) {
  const now = performance.now();
  state.fpsTimes = [...state.fpsTimes.filter((t) => now - t < 2000), now];
  const fps = state.fpsTimes.length > 1 ? (state.fpsTimes.length - 1) / ((now - state.fpsTimes[0]) / 1000) : 1000 / ms;
  const e = state.entry;
  const work = rays === null ? "one call" : `${rays} rays evaluated`;
  hud.textContent = `${ms.toFixed(1)} ms/frame · ${fps.toFixed(1)} FPS · ${w}x${h} (${work}) · ` +
    `${e.file} (${e.precision}${e.kind === "split" ? (state.kernel ? ", wasm encoding" : ", JS encoding") : ""}, ${(e.bytes / 1e6).toFixed(2)} MB) · ${state.ep}, ${state.threads} thread(s)`;
}

async function main() {
  const q = parseQuery(location.search);
  if (q.error) { showError(q.error); return; }
  state.useCells = q.cells;
  const manifest = await (await fetch("models.json")).json();
  const name = q.model || manifest.default;
  const named = manifest.models.find((m) => m.file === name);
  if (!named) {
    showError(`model=${name}: not in this viewer (have: ${manifest.models.map((m) => m.file).join(", ")})`);
    return;
  }
  const { entry, error } = imageModelFor(manifest.models, named, q.size); // an image model: the file of size=
  if (error) { showError(error); return; }
  const image = entry.meta.decoder === "image";
  for (const m of menuModels(manifest.models, entry)) {
    const opt = document.createElement("option");
    opt.value = m.file;
    const how = m.kind === "split" ? " · JS encoding" : image ? " · image" : m.meta.batch ? " · static" : "";
    opt.textContent = `${m.precision}${how} · ${(m.bytes / 1e6).toFixed(2)} MB`;
    opt.selected = m.file === entry.file;
    selector.appendChild(opt);
  }
  const { ep, warning } = await loadRuntime(q.ep, manifest.webgpu);
  if (warning) showError(warning);
  state.ep = ep;
  canvas.dataset.provider = state.ep;
  ort.env.wasm.wasmPaths = new URL("./", location.href).href;
  const wanted = q.threads || Math.min(navigator.hardwareConcurrency || 1, 4);
  state.threads = wanted;
  if (wanted > 1 && !self.crossOriginIsolated) {
    state.threads = 1;
    showError(`no WebAssembly threads: the page is not cross-origin isolated (serve it with the ` +
      `COOP/COEP headers: python -m export.viewer serve=true); running on 1 thread`);
  }
  ort.env.wasm.numThreads = state.threads;
  state.entry = entry;
  state.session = await openSession(entry);
  if (entry.kind === "split") await startWorkers(entry, state.threads);

  const meta = entry.meta;
  const [W, H] = image ? [meta.output_size[1], meta.output_size[0]] : q.size || [meta.image_size[1], meta.image_size[0]];
  canvas.width = W;
  canvas.height = H;
  const fit = Math.max(1, Math.floor(Math.min(512 / Math.max(W, H), 4)));
  canvas.style.width = `${W * fit}px`;
  canvas.style.height = `${H * fit}px`;
  const batch = q.batch || 0; // 0: the default of the model's kind
  const rig = rigOf(meta);
  const { basis, limits, speed, view: start } = rigView(rig); // a forward rig: its average pose, and near it
  let view = start;
  let pose = q.pose;
  const currentPose = () => pose || orbitPose(basis, view.target, view.az, view.el, view.radius);

  if (q.pose) { // scripted: the requested pose, frames times; data-ms is the median after the first
    const times = [];
    for (let i = 0; i < q.frames; i++) {
      const t0 = performance.now();
      const { image, rays } = await render(q.pose, W, H, batch);
      ctx.putImageData(image, 0, 0);
      const ms = performance.now() - t0;
      times.push(ms);
      updateHud(ms, rays, W, H);
      if (i === 0) canvas.dataset.loadMs = String(performance.now());
      canvas.dataset.ms = String(i === q.frames - 1 && times.length > 1 ? median(times.slice(1)) : ms);
      canvas.dataset.frame = String(++state.frames);
    }
    state.full = true;
    state.dirty = false;
  }

  const coarse = document.createElement("canvas");
  const markInput = () => {
    view = clampView(view, limits, rig.center);
    pose = null; state.dirty = true; state.full = false; state.lastInput = performance.now();
  };
  const pointers = new Map();
  canvas.addEventListener("pointerdown", (ev) => { canvas.setPointerCapture(ev.pointerId); pointers.set(ev.pointerId, ev); });
  canvas.addEventListener("pointerup", (ev) => pointers.delete(ev.pointerId));
  canvas.addEventListener("pointercancel", (ev) => pointers.delete(ev.pointerId));
  canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
  canvas.addEventListener("pointermove", (ev) => {
    const prev = pointers.get(ev.pointerId);
    if (!prev) return;
    const dx = (ev.clientX - prev.clientX) / fit, dy = (ev.clientY - prev.clientY) / fit;
    if (pointers.size >= 2) { // two fingers: pinch zooms, moving both pans
      const [a, b] = [...pointers.values()];
      const other = a.pointerId === ev.pointerId ? b : a;
      const before = Math.hypot(prev.clientX - other.clientX, prev.clientY - other.clientY);
      const after = Math.hypot(ev.clientX - other.clientX, ev.clientY - other.clientY);
      if (before > 0 && after > 0) view.radius *= before / after;
      view.target = panTarget(view.target, currentPose(), dx / 2, dy / 2, view.radius, scaleIntrinsics(meta.K, meta.image_size, H, W)[0]);
    } else if (ev.buttons & 6 || ev.shiftKey) { // right/middle button or shift: pan
      view.target = panTarget(view.target, currentPose(), dx, dy, view.radius, scaleIntrinsics(meta.K, meta.image_size, H, W)[0]);
    } else { // orbit
      view.az -= dx * speed;
      view.el += dy * speed; // clamped by markInput
    }
    pointers.set(ev.pointerId, ev);
    markInput();
  });
  canvas.addEventListener("wheel", (ev) => { ev.preventDefault(); view.radius *= Math.exp(ev.deltaY * 0.001); markInput(); }, { passive: false });
  selector.addEventListener("change", async () => {
    const next = manifest.models.find((m) => m.file === selector.value);
    try {
      state.busy = true;
      state.session = await openSession(next);
      state.entry = next;
      if (next.kind === "split") await startWorkers(next, state.threads);
      state.dirty = true;
      state.full = false;
    } catch (exc) {
      showError(exc.message);
    } finally {
      state.busy = false;
    }
  });

  const loop = async () => {
    const idle = performance.now() - state.lastInput > IDLE_MS;
    if (!state.busy && (state.dirty || (idle && !state.full))) {
      state.busy = true;
      const full = idle || image; // an image model draws its one size
      state.dirty = false;
      const w = full ? W : Math.max(1, Math.round(W * COARSE)), h = full ? H : Math.max(1, Math.round(H * COARSE));
      const t0 = performance.now();
      try {
        const drawn = currentPose();
        const { image, rays } = await render(drawn, w, h, batch);
        if (full) {
          ctx.putImageData(image, 0, 0);
        } else {
          coarse.width = w;
          coarse.height = h;
          coarse.getContext("2d").putImageData(image, 0, 0);
          ctx.imageSmoothingEnabled = true;
          ctx.drawImage(coarse, 0, 0, W, H);
        }
        const ms = performance.now() - t0;
        updateHud(ms, rays, w, h);
        if (full) {
          state.full = true;
          canvas.dataset.pose = drawn.join(","); // of the last full frame (row-major 4x4, for scripts)
          if (!canvas.dataset.loadMs) canvas.dataset.loadMs = String(performance.now());
          canvas.dataset.ms = String(ms);
          canvas.dataset.frame = String(++state.frames);
        }
      } catch (exc) {
        showError(`rendering failed: ${String(exc && exc.message ? exc.message : exc).split("\n")[0]}`);
        return;
      } finally {
        state.busy = false;
      }
    }
    requestAnimationFrame(loop);
  };
  state.lastInput = q.pose ? performance.now() : -Infinity;
  requestAnimationFrame(loop);
}

main().catch((exc) => showError(String(exc && exc.message ? exc.message : exc).split("\n")[0]));
