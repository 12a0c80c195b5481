// Camera and ray math of the web viewer: pure functions, no DOM (the tests run this file in Node).
//
// Same conventions and arithmetic as core/rays.py and export/runtime/lightfield.py: OpenCV cameras (+X right,
// +Y down, looking along +Z), row-major 4x4 camera-to-world poses, 3x3 pinhole intrinsics in pixels,
// pixel centres at +0.5, rays in row-major pixel order. Every step is rounded to float32 (Math.fround)
// as numpy does in float32, so the rays match the Python runtime's to about one unit in the last place.

const f = Math.fround;

/**
 * All rays of an H x W image through pixel centres (export.runtime.rays_from_camera).
 * @param {number[]} c2w 16 numbers, row-major 4x4 camera-to-world (a 3x4 of 12 numbers also works).
 * @param {number[]} K 9 numbers, row-major 3x3 intrinsics.
 * @returns {{o: Float32Array, d: Float32Array}} origins and unit directions, each [H*W*3].
 */
export function raysFromCamera(c2w, K, H, W) {
  const n = H * W;
  const o = new Float32Array(n * 3);
  const d = new Float32Array(n * 3);
  const fx = f(K[0]), cx = f(K[2]), fy = f(K[4]), cy = f(K[5]);
  const R = [0, 1, 2, 4, 5, 6, 8, 9, 10].map((i) => f(c2w[i]));
  const t = [f(c2w[3]), f(c2w[7]), f(c2w[11])];
  for (let v = 0, p = 0; v < H; v++) {
    const y = f(f(f(v + 0.5) - cy) / fy);
    for (let u = 0; u < W; u++, p += 3) {
      const x = f(f(f(u + 0.5) - cx) / fx);
      const dx = f(f(f(x * R[0]) + f(y * R[1])) + R[2]);
      const dy = f(f(f(x * R[3]) + f(y * R[4])) + R[5]);
      const dz = f(f(f(x * R[6]) + f(y * R[7])) + R[8]);
      const norm = Math.max(f(Math.sqrt(f(f(f(dx * dx) + f(dy * dy)) + f(dz * dz)))), 1e-12);
      d[p] = dx / norm;
      d[p + 1] = dy / norm;
      d[p + 2] = dz / norm;
      o[p] = t[0];
      o[p + 1] = t[1];
      o[p + 2] = t[2];
    }
  }
  return { o, d };
}

/**
 * Which rays may meet the box within [near, far] (export.runtime.rays_meet_box: slab test, widened by
 * margin * (1 + |t|) so that a grazing ray is left to the model, which runs the exact test itself).
 * @returns {Uint8Array} [N], 1 where the ray may meet the box.
 */
export function raysMeetBox(o, d, box, near, far, margin = 1e-4) {
  const n = o.length / 3;
  const hit = new Uint8Array(n);
  const lo = box.slice(0, 3).map(f), hi = box.slice(3, 6).map(f);
  for (let i = 0; i < n; i++) {
    let tIn = -Infinity, tOut = Infinity;
    for (let a = 0; a < 3; a++) {
      let da = d[3 * i + a];
      if (Math.abs(da) < 1e-12) da = f(1e-12);
      const inv = f(1 / da);
      const t0 = f(f(lo[a] - o[3 * i + a]) * inv), t1 = f(f(hi[a] - o[3 * i + a]) * inv);
      tIn = Math.max(tIn, Math.min(t0, t1));
      tOut = Math.min(tOut, Math.max(t0, t1));
    }
    tIn = Math.max(tIn, near);
    tOut = Math.min(tOut, far);
    hit[i] = tIn < tOut + margin * (1 + Math.abs(tOut)) ? 1 : 0;
  }
  return hit;
}

/**
 * The cells of an empty-space record (export.runtime.occupancy_cells): {resolution, bits: base64 of the
 * G^3 cells, x-major, 8 per byte, first cell in the high bit}.
 * @returns {{G: number, bits: Uint8Array}}
 */
export function decodeCells(record) {
  const G = record.resolution;
  const raw = atob(record.bits);
  if (raw.length !== Math.ceil(G ** 3 / 8)) throw new Error(`empty-space grid of resolution ${G} has ${raw.length} bytes`);
  return { G, bits: Uint8Array.from(raw, (c) => c.charCodeAt(0)) };
}

/**
 * Narrow hit (in place) to the rays that may have one of their K bin-centre points in a set cell
 * (export.runtime.rays_cross_cells, in float64). margin > 0 widens the test by that many cells (the
 * whole-graph model decides itself; the page only skips what it surely gives the background); margin 0
 * is the graph's own test, for the split model whose MLP the page calls only on the rays that pass.
 * @param {Float32Array} o origins [N*3]  @param {Float32Array} d unit directions [N*3]
 * @param {Uint8Array} hit [N] rays to test (others stay 0)  @param {number[]} box content box [6]
 * @param {{G: number, bits: Uint8Array}} cells (decodeCells)
 */
export function raysCrossCells(o, d, hit, box, near, far, K, cells, margin) {
  const { G, bits } = cells;
  const sx = G / (box[3] - box[0]), sy = G / (box[4] - box[1]), sz = G / (box[5] - box[2]);
  const top = G - 1;
  const cell = (q) => (q < 0 ? 0 : q >= top ? top : q | 0); // floor, clamped to the grid
  for (let r = 0; r < hit.length; r++) {
    if (!hit[r]) continue;
    const ox = o[3 * r], oy = o[3 * r + 1], oz = o[3 * r + 2];
    const dx = Math.abs(d[3 * r]) < 1e-12 ? 1e-12 : d[3 * r];
    const dy = Math.abs(d[3 * r + 1]) < 1e-12 ? 1e-12 : d[3 * r + 1];
    const dz = Math.abs(d[3 * r + 2]) < 1e-12 ? 1e-12 : d[3 * r + 2];
    const ax = (box[0] - ox) / dx, bx = (box[3] - ox) / dx, ay = (box[1] - oy) / dy, by = (box[4] - oy) / dy;
    const az = (box[2] - oz) / dz, bz = (box[5] - oz) / dz;
    const tIn = Math.min(Math.max(Math.max(Math.min(ax, bx), Math.min(ay, by), Math.min(az, bz)), near), far);
    const tOut = Math.min(Math.max(Math.min(Math.max(ax, bx), Math.max(ay, by), Math.max(az, bz)), near), far);
    const len = Math.max(tOut - tIn, 0);
    // the first bin centre and the step between centres, in cell units
    const t0 = tIn + 0.5 * len / K;
    const qx = (ox + t0 * dx - box[0]) * sx, qy = (oy + t0 * dy - box[1]) * sy, qz = (oz + t0 * dz - box[2]) * sz;
    const ux = (len / K) * dx * sx, uy = (len / K) * dy * sy, uz = (len / K) * dz * sz;
    let found = 0;
    if (margin === 0) {
      for (let k = 0; k < K; k++) {
        const c = (cell(qx + k * ux) * G + cell(qy + k * uy)) * G + cell(qz + k * uz);
        if ((bits[c >> 3] >> (7 - (c & 7))) & 1) { found = 1; break; }
      }
    } else {
      for (let k = 0; k < K && !found; k++) found = nearSetCell(qx + k * ux, qy + k * uy, qz + k * uz, margin, cells);
    }
    hit[r] = found;
  }
  return hit;
}

/** 1 when a set cell lies within margin cells (per axis) of the point (px, py, pz) in cell units. */
function nearSetCell(px, py, pz, margin, { G, bits }) {
  const top = G - 1, cell = (q) => (q < 0 ? 0 : q >= top ? top : Math.floor(q));
  for (let i = cell(px - margin); i <= cell(px + margin); i++) {
    for (let j = cell(py - margin); j <= cell(py + margin); j++) {
      for (let l = cell(pz - margin); l <= cell(pz + margin); l++) {
        const c = (i * G + j) * G + l;
        if ((bits[c >> 3] >> (7 - (c & 7))) & 1) return 1;
      }
    }
  }
  return 0;
}

/**
 * The NDC frame of a forward-facing model (meta.ndc: c2w 4x4, scale [sx, sy], near) as plain numbers
 * for ndcRay: the reference pose's rotation R (row-major), its centre t, the scale and the near plane.
 */
export function ndcFrame(ndc) {
  const c = ndc.c2w;
  return { R: Float64Array.from([c[0][0], c[0][1], c[0][2], c[1][0], c[1][1], c[1][2], c[2][0], c[2][1], c[2][2]]),
    t: Float64Array.from([c[0][3], c[1][3], c[2][3]]), sx: ndc.scale[0], sy: ndc.scale[1], near: ndc.near };
}

const MIN_DEPTH_DIR = 1e-4; // core.ndc.MIN_DEPTH_DIR

/**
 * One world ray -> its NDC ray in the frame fr (core.ndc.ndc_rays, float64): out[0..2] the origin,
 * out[3..5] the direction, not normalised (origin + direction is the point at infinity).
 */
export function ndcRay(fr, ox, oy, oz, dx, dy, dz, out) {
  const R = fr.R, near = fr.near;
  const px = ox - fr.t[0], py = oy - fr.t[1], pz = oz - fr.t[2];
  // world -> reference camera: R^T (x - t)
  let cx = px * R[0] + py * R[3] + pz * R[6], cy = px * R[1] + py * R[4] + pz * R[7];
  let cz = px * R[2] + py * R[5] + pz * R[8];
  const ex = dx * R[0] + dy * R[3] + dz * R[6], ey = dx * R[1] + dy * R[4] + dz * R[7];
  const ez0 = dx * R[2] + dy * R[5] + dz * R[8];
  const ez = Math.abs(ez0) < MIN_DEPTH_DIR ? MIN_DEPTH_DIR : ez0; // sideways rays bent as the graph does
  const k = (near - cz) / ez; // onto the near plane
  cx += k * ex; cy += k * ey; cz += k * ez0;
  out[0] = fr.sx * cx / cz;
  out[1] = fr.sy * cy / cz;
  out[2] = 1 - 2 * near / cz;
  out[3] = fr.sx * (ex / ez - cx / cz);
  out[4] = fr.sy * (ey / ez - cy / cz);
  out[5] = 2 * near / cz;
}

/**
 * World rays -> NDC rays (ndcRay on each; core.ndc.ndc_rays).
 * @param {ArrayLike<number>} o origins [N*3]  @param {ArrayLike<number>} d directions [N*3]
 * @param {{c2w: number[][], scale: number[], near: number}} ndc the model's meta.ndc
 * @returns {{o: Float64Array, d: Float64Array}} NDC origins and (not normalised) directions, [N*3] each
 */
export function ndcRays(o, d, ndc) {
  const fr = ndcFrame(ndc), n = o.length / 3, out = new Float64Array(6);
  const on = new Float64Array(3 * n), dn = new Float64Array(3 * n);
  for (let i = 0; i < n; i++) {
    ndcRay(fr, o[3 * i], o[3 * i + 1], o[3 * i + 2], d[3 * i], d[3 * i + 1], d[3 * i + 2], out);
    on.set(out.subarray(0, 3), 3 * i);
    dn.set(out.subarray(3, 6), 3 * i);
  }
  return { o: on, d: dn };
}

/** Intrinsics of the training cameras (trainHW = [H, W]) scaled to another size: same field of view. */
export function scaleIntrinsics(K, trainHW, H, W) {
  const sx = W / trainHW[1], sy = H / trainHW[0];
  return [K[0][0] * sx, K[0][1] * sx, K[0][2] * sx, K[1][0] * sy, K[1][1] * sy, K[1][2] * sy,
    K[2][0], K[2][1], K[2][2]];
}

const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
const scale = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const normalize = (a) => scale(a, 1 / Math.max(Math.hypot(a[0], a[1], a[2]), 1e-12));

/** Camera-to-world pose (16 numbers, row-major) of a camera at eye looking at target (core.cameras.look_at). */
export function lookAt(eye, target, up) {
  const forward = normalize(sub(target, eye));
  const right = normalize(cross(forward, up));
  const down = cross(forward, right);
  return [right[0], down[0], forward[0], eye[0],
    right[1], down[1], forward[1], eye[1],
    right[2], down[2], forward[2], eye[2],
    0, 0, 0, 1];
}

/**
 * The orbit of the training rig (export.runtime.paths.orbit_poses): a camera at azimuth az and elevation el
 * (radians) at distance radius from target, looking at it, with the rig's up.
 * @param {{center: number[], up: number[], radius: number, elevation: number}} rig
 */
export function orbitBasis(rig) {
  const up = normalize(rig.up);
  const helper = Math.abs(up[0]) < 0.9 ? [1, 0, 0] : [0, 1, 0];
  const e1 = normalize(cross(up, helper));
  const e2 = cross(up, e1);
  return { up, e1, e2 };
}

export function orbitPose(basis, target, az, el, radius) {
  const { up, e1, e2 } = basis;
  const dir = add(scale(add(scale(e1, Math.cos(az)), scale(e2, Math.sin(az))), Math.cos(el)), scale(up, Math.sin(el)));
  return lookAt(add(target, scale(dir, radius)), target, up);
}

/**
 * The orbit basis of a forward-facing rig (core.rig.forward_rig): azimuth and elevation 0 at
 * distance focus_depth from the focus point put the camera on the rig's average pose, and small
 * angles swing it about the focus point.
 */
export function forwardBasis(rig) {
  const c = rig.c2w;
  const right = [c[0][0], c[1][0], c[2][0]], down = [c[0][1], c[1][1], c[2][1]], fwd = [c[0][2], c[1][2], c[2][2]];
  return { up: scale(down, -1), e1: scale(fwd, -1), e2: right };
}

const FORWARD_REACH = 1.5; // how far (in path radii) the viewer lets a forward rig's camera stray

/**
 * Where the page starts and how far the user may move it: the orbit basis, the start view
 * {target, az, el, radius}, its limits {az, el, radius: [lo, hi], pan: largest target offset} and the
 * orbit speed (radians per dragged pixel).
 * An object rig starts on its orbit at azimuth 0 and may go anywhere but over the poles; a forward rig
 * starts on its average pose and stays within FORWARD_REACH path radii of it (angles seen from the
 * focus point), so the user cannot swing behind the scene, where nothing was seen.
 */
export function rigView(rig) {
  if (rig.kind !== "forward") {
    return { basis: orbitBasis(rig), view: { target: [...rig.center], az: 0, el: rig.elevation, radius: rig.radius },
      limits: { az: [-Infinity, Infinity], el: [-1.5, 1.5], radius: [0, Infinity], pan: Infinity }, speed: 0.01 };
  }
  const focus = rig.focus_depth, reach = FORWARD_REACH * Math.max(rig.path_radius, 0.01 * focus);
  const angle = Math.atan2(reach, focus);
  return { basis: forwardBasis(rig), view: { target: [...rig.center], az: 0, el: 0, radius: focus },
    limits: { az: [-angle, angle], el: [-angle, angle], radius: [Math.max(focus - reach, 0.5 * focus), focus + reach],
      pan: reach }, speed: angle / 100 };
}

const clamp = (x, [lo, hi]) => Math.min(Math.max(x, lo), hi);

/** The view moved back within limits (rigView) around center: angles, distance and target offset. */
export function clampView(view, limits, center) {
  const offset = sub(view.target, center), dist = Math.hypot(offset[0], offset[1], offset[2]);
  const target = dist > limits.pan ? add(center, scale(offset, limits.pan / dist)) : view.target;
  return { target, az: clamp(view.az, limits.az), el: clamp(view.el, limits.el), radius: clamp(view.radius, limits.radius) };
}

/** The rig of a model, or one made from its content box when the metadata has none. */
export function rigOf(meta) {
  if (meta.rig && meta.rig.center) return meta.rig;
  const box = meta.content_aabb || meta.aabb;
  const center = [0, 1, 2].map((a) => (box[a] + box[a + 3]) / 2);
  const diag = Math.hypot(box[3] - box[0], box[4] - box[1], box[5] - box[2]);
  return { center, up: [0, 0, 1], radius: 1.5 * diag, elevation: 0.5 };
}

/** Move target in the image plane of pose (pixels dx, dy at distance radius, focal fx). */
export function panTarget(target, pose, dx, dy, radius, fx) {
  const right = [pose[0], pose[4], pose[8]], down = [pose[1], pose[5], pose[9]];
  const k = radius / fx;
  return add(target, add(scale(right, -dx * k), scale(down, -dy * k)));
}

/**
 * The scriptable URL interface: pose= (16 numbers, row-major 4x4 OpenCV camera-to-world), size=WxH,
 * model=, threads=, frames=N, and ep= (wasm | webgpu), batch= (rays per inference call).
 * @returns {{pose: number[]|null, size: number[]|null, model: string|null, threads: number|null,
 *            frames: number, ep: string|null, batch: number|null, error: string|null}}
 */
export function parseQuery(search) {
  const q = new URLSearchParams(search);
  const out = { pose: null, size: null, model: null, threads: null, frames: 1, ep: null, batch: null, cells: true, error: null };
  const bad = (msg) => ({ ...out, error: msg });
  if (q.has("pose")) {
    const nums = q.get("pose").split(",").map(Number);
    if (nums.length !== 16 || nums.some((x) => !Number.isFinite(x))) {
      return bad(`pose= must be 16 comma-separated finite numbers (row-major 4x4), got ${nums.length}`);
    }
    out.pose = nums;
  }
  if (q.has("size")) {
    const m = /^(\d+)x(\d+)$/.exec(q.get("size"));
    if (!m || +m[1] < 1 || +m[2] < 1 || +m[1] > 4096 || +m[2] > 4096) {
      return bad(`size= must be WxH in pixels (1..4096), got '${q.get("size")}'`);
    }
    out.size = [+m[1], +m[2]];
  }
  for (const [key, lo] of [["threads", 1], ["frames", 1], ["batch", 1]]) {
    if (q.has(key)) {
      const v = Number(q.get(key));
      if (!Number.isInteger(v) || v < lo) return bad(`${key}= must be an integer >= ${lo}, got '${q.get(key)}'`);
      out[key] = v;
    }
  }
  if (q.has("model")) {
    const m = q.get("model");
    if (!/^[\w.-]+\.onnx$/.test(m)) return bad(`model= must be an .onnx file name in this folder, got '${m}'`);
    out.model = m;
  }
  if (q.has("cells")) { // cells=0: no empty-space skipping (a timing baseline)
    if (!["0", "1"].includes(q.get("cells"))) return bad(`cells= must be 0 or 1, got '${q.get("cells")}'`);
    out.cells = q.get("cells") === "1";
  }
  if (q.has("ep")) {
    if (!["wasm", "webgpu"].includes(q.get("ep"))) return bad(`ep= must be wasm or webgpu, got '${q.get("ep")}'`);
    out.ep = q.get("ep");
  }
  return out;
}

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
