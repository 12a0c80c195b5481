// The hash-grid student's input vector in plain JS (student/encoding.py HashRayEncoder, the student's
// own sampling and cuda/hashgrid_ref.py's lookup): K points per ray in the part of [near, far] inside
// the content box, normalised by the box, and the trilinear features of every point at every level.
// One loop per point instead of ONNX Runtime's tensor-at-a-time ops: the viewer's fast path.
// A forward-facing student (enc.ndc set) first turns each world ray into its NDC ray (camera.js
// ndcRay, core.ndc.ndc_rays) with a unit direction, as its graph does; every such ray is a hit. With an
// empty-space grid (enc.occupancy), a ray none of whose K points lies in a set cell is a miss too (the
// graph's test on the same points: core/skipgrid.py points_occupied), so it is never encoded.
import { ndcFrame, ndcRay } from "./camera.js";

/**
 * Features of the rays that the student evaluates, row-major [hits, in_dim].
 * @param {Float32Array} o origins [N*3]   @param {Float32Array} d unit directions [N*3]
 * @param {Int32Array} rows indices of the rays to encode
 * @param {object} enc encoder facts (export/split.py encoder_facts)  @param {Float32Array} table features
 * @param {{G: number, bits: Uint8Array}|null} cells the decoded empty-space grid (decodeCells), if any
 * @param {object|null} kernel the WebAssembly lookup (wasmKernel), if any
 * @param {((hits: number) => Float32Array)|null} place where the features of the hits go (hits * in_dim
 *   floats; called once, when their number is known), e.g. a slice of a SharedArrayBuffer that the
 *   workers fill side by side; default a new array
 * @returns {{features: Float32Array, hit: Uint8Array}} hit [rows.length]: 0 where the ray misses the box
 *   or crosses only empty cells (a forward-facing student has no misses); features: one row per hit, in order
 */
export function encodeRays(o, d, rows, enc, table, cells = null, kernel = null, place = null) {
  const K = enc.n_points, g = enc.grid, L = g.n_levels, F = g.n_features, nf = enc.point_freqs;
  const inDim = enc.in_dim, count = rows.length;
  const hit = new Uint8Array(count);
  const cx = enc.center[0], cy = enc.center[1], cz = enc.center[2];
  const hx = enc.half_extent[0], hy = enc.half_extent[1], hz = enc.half_extent[2];
  const box = Float64Array.from(enc.box), near = enc.near, far = enc.far, clip = enc.ray_range === "box";
  const T = 2 ** g.log2_hashmap_size, mask = T - 1;
  const p1 = g.primes[1] | 0, p2 = g.primes[2] | 0;
  // per-level constants in typed arrays (monomorphic, unboxed loads in the loop)
  const scales = Float64Array.from(g.scales), res = Int32Array.from(g.resolutions);
  const sizes = Int32Array.from(g.sizes), offsets = Int32Array.from(g.offsets.slice(0, L));
  const dense = Uint8Array.from(g.resolutions, (r) => (r ** 3 <= T ? 1 : 0));
  // pass 1: the K points of every ray (normalised to the box, then to the grid's unit cube)
  // pts (the box-normalised points) only feed the optional PE of the points; unit goes straight into
  // the WebAssembly kernel's memory when there is one (two features per level: its only layout)
  const G = cells ? cells.G : 0, bits = cells ? cells.bits : null;
  const wasm = kernel && F === 2 ? kernel.reserve(count, K, inDim, bits) : null;
  const pts = nf >= 0 ? new Float64Array(count * K * 3) : null;
  const unit = wasm ? wasm.unit : new Float64Array(count * K * 3);
  const ndc = enc.ndc ? ndcFrame(enc.ndc) : null, r = new Float64Array(6);
  let n = 0; // rays kept so far: the points of ray j go to slot n
  if (wasm && !ndc && !pts) { // the same pass in the kernel (world rays, no PE of the points)
    for (let j = 0; j < count; j++) {
      const i = 3 * rows[j];
      wasm.o[3 * j] = o[i]; wasm.o[3 * j + 1] = o[i + 1]; wasm.o[3 * j + 2] = o[i + 2];
      wasm.d[3 * j] = d[i]; wasm.d[3 * j + 1] = d[i + 1]; wasm.d[3 * j + 2] = d[i + 2];
    }
    n = kernel.exports.points(wasm.oPtr, wasm.dPtr, count, wasm.unitPtr, wasm.hitPtr, K, box[0], box[1], box[2],
      box[3], box[4], box[5], near, far, cx, cy, cz, hx, hy, hz, clip ? 1 : 0, wasm.bitsPtr, G, wasm.tsPtr);
    hit.set(wasm.hit);
  }
  for (let j = 0; j < count && !(wasm && !ndc && !pts); j++) {
    const i = rows[j];
    let ox = o[3 * i], oy = o[3 * i + 1], oz = o[3 * i + 2], dx = d[3 * i], dy = d[3 * i + 1], dz = d[3 * i + 2];
    if (ndc) {
      ndcRay(ndc, ox, oy, oz, dx, dy, dz, r);
      const norm = Math.max(Math.hypot(r[3], r[4], r[5]), 1e-12);
      ox = r[0]; oy = r[1]; oz = r[2]; dx = r[3] / norm; dy = r[4] / norm; dz = r[5] / norm;
    }
    // the slab test of core.rays.ray_aabb_intersect
    const ix0 = 1 / (Math.abs(dx) < 1e-12 ? 1e-12 : dx), iy0 = 1 / (Math.abs(dy) < 1e-12 ? 1e-12 : dy);
    const iz0 = 1 / (Math.abs(dz) < 1e-12 ? 1e-12 : dz);
    const ax = (box[0] - ox) * ix0, bx = (box[3] - ox) * ix0;
    const ay = (box[1] - oy) * iy0, by = (box[4] - oy) * iy0;
    const az = (box[2] - oz) * iz0, bz = (box[5] - oz) * iz0;
    let tIn = Math.max(Math.min(ax, bx), Math.min(ay, by), Math.min(az, bz), near);
    let tOut = Math.min(Math.max(ax, bx), Math.max(ay, by), Math.max(az, bz), far);
    const ok = tIn < tOut;
    if (!ok && !ndc) continue; // a miss: the background, not encoded
    // (in NDC a miss keeps a zero-length segment inside [near, far], as core.rays gives it)
    if (!ok) { tIn = Math.min(tIn, far); tOut = tIn; }
    if (!clip) { tIn = near; tOut = far; }
    const sx = (ox + tIn * dx - cx) / hx, sy = (oy + tIn * dy - cy) / hy, sz = (oz + tIn * dz - cz) / hz;
    const len = tOut - tIn;
    const vx = len * dx / hx, vy = len * dy / hy, vz = len * dz / hz;
    let set = bits ? 0 : 1;
    for (let k = 0, q = n * K * 3; k < K; k++, q += 3) {
      const t = (k + 0.5) / K;
      const px = sx + t * vx, py = sy + t * vy, pz = sz + t * vz;
      if (pts) { pts[q] = px; pts[q + 1] = py; pts[q + 2] = pz; }
      const ux = Math.min(Math.max((px + 1) * 0.5, 0), 1), uy = Math.min(Math.max((py + 1) * 0.5, 0), 1);
      const uz = Math.min(Math.max((pz + 1) * 0.5, 0), 1);
      unit[q] = ux; unit[q + 1] = uy; unit[q + 2] = uz;
      if (!set) { // the empty-space test of the graph on the same point (floor(u G), clamped)
        const c = (Math.min(Math.floor(ux * G), G - 1) * G + Math.min(Math.floor(uy * G), G - 1)) * G
          + Math.min(Math.floor(uz * G), G - 1);
        set = (bits[c >> 3] >> (7 - (c & 7))) & 1;
      }
    }
    if (!set) continue;
    hit[j] = 1;
    n++;
  }
  // pass 2: one level at a time over all points, so that level's part of the table stays in the cache
  if (wasm) {
    for (let l = 0; l < L; l++) {
      kernel.exports.level(wasm.unitPtr, n, K, wasm.featPtr, inDim * 4, L * F * 4, l * F * 4, scales[l],
        offsets[l] * F * 4, dense[l], res[l], sizes[l], mask, p1, p2);
    }
  }
  const features = place ? place(n) : new Float32Array(n * inDim);
  if (wasm) {
    features.set(wasm.features(n * inDim)); // a copy out of the kernel's memory
  } else {
    for (let l = 0; l < L; l++) {
      encodeLevel(unit, n, K, l, L, F, inDim, scales[l], offsets[l], dense[l] === 1, res[l], sizes[l], mask,
        p1, p2, table, features);
    }
  }
  if (nf >= 0) { // [x, sin(2^k x), cos(2^k x)] of the K x 3 normalised coordinates, after the features
    const n3 = K * 3;
    for (let j = 0; j < n; j++) {
      const pe = j * inDim + K * L * F;
      for (let a = 0; a < n3; a++) {
        const x = pts[j * n3 + a];
        features[pe + a] = x;
        for (let q = 0; q < nf; q++) {
          const arg = x * 2 ** q;
          features[pe + n3 + a * nf + q] = Math.sin(arg);
          features[pe + n3 * (1 + nf) + a * nf + q] = Math.cos(arg);
        }
      }
    }
  }
  return { features, hit };
}

/**
 * Level l's trilinear features of every point (cuda/hashgrid_ref.py): corner c = x + 2 y + 4 z,
 * separable weights; dense levels index the cells, hashed ones XOR the primes. The two kinds and the
 * usual two features per level have loops of their own (no branch per point).
 */
function encodeLevel(unit, count, K, l, L, F, inDim, s, off, isDense, R, size, mask, p1, p2, table, features) {
  const R2 = R * R;
  let m = 0;
  for (let j = 0; j < count; j++) {
    for (let k = 0; k < K; k++, m++) {
      const qx = unit[3 * m] * s + 0.5, qy = unit[3 * m + 1] * s + 0.5, qz = unit[3 * m + 2] * s + 0.5;
      const fx0 = Math.floor(qx), fy0 = Math.floor(qy), fz0 = Math.floor(qz);
      const fx = qx - fx0, fy = qy - fy0, fz = qz - fz0;
      const ix = fx0 | 0, iy = fy0 | 0, iz = fz0 | 0;
      const wx0 = 1 - fx, wy0 = 1 - fy, wz0 = 1 - fz;
      const w00 = wy0 * wz0, w10 = fy * wz0, w01 = wy0 * fz, w11 = fy * fz;
      let i0 = 0, i1 = 0, i2 = 0, i3 = 0, i4 = 0, i5 = 0, i6 = 0, i7 = 0;
      if (isDense) {
        const b0 = ix + iy * R + iz * R2;
        i0 = b0; i1 = b0 + 1; i2 = b0 + R; i3 = b0 + R + 1;
        i4 = b0 + R2; i5 = b0 + R2 + 1; i6 = b0 + R2 + R; i7 = b0 + R2 + R + 1;
        if (i7 >= size) { // the boundary wrap of the layout
          i0 %= size; i1 %= size; i2 %= size; i3 %= size; i4 %= size; i5 %= size; i6 %= size; i7 %= size;
        }
      } else {
        const y0 = Math.imul(iy, p1), y1 = Math.imul(iy + 1, p1);
        const z0 = Math.imul(iz, p2), z1 = Math.imul(iz + 1, p2);
        const x1 = ix + 1, a00 = y0 ^ z0, a10 = y1 ^ z0, a01 = y0 ^ z1, a11 = y1 ^ z1;
        i0 = (ix ^ a00) & mask; i1 = (x1 ^ a00) & mask; i2 = (ix ^ a10) & mask; i3 = (x1 ^ a10) & mask;
        i4 = (ix ^ a01) & mask; i5 = (x1 ^ a01) & mask; i6 = (ix ^ a11) & mask; i7 = (x1 ^ a11) & mask;
      }
      const out = j * inDim + (k * L + l) * F;
      const c0 = wx0 * w00, c1 = fx * w00, c2 = wx0 * w10, c3 = fx * w10;
      const c4 = wx0 * w01, c5 = fx * w01, c6 = wx0 * w11, c7 = fx * w11;
      if (F === 2) {
        const t0 = (off + i0) * 2, t1 = (off + i1) * 2, t2 = (off + i2) * 2, t3 = (off + i3) * 2;
        const t4 = (off + i4) * 2, t5 = (off + i5) * 2, t6 = (off + i6) * 2, t7 = (off + i7) * 2;
        features[out] = c0 * table[t0] + c1 * table[t1] + c2 * table[t2] + c3 * table[t3]
          + c4 * table[t4] + c5 * table[t5] + c6 * table[t6] + c7 * table[t7];
        features[out + 1] = c0 * table[t0 + 1] + c1 * table[t1 + 1] + c2 * table[t2 + 1] + c3 * table[t3 + 1]
          + c4 * table[t4 + 1] + c5 * table[t5 + 1] + c6 * table[t6 + 1] + c7 * table[t7 + 1];
        continue;
      }
      for (let f = 0; f < F; f++) {
        features[out + f] = c0 * table[(off + i0) * F + f] + c1 * table[(off + i1) * F + f]
          + c2 * table[(off + i2) * F + f] + c3 * table[(off + i3) * F + f]
          + c4 * table[(off + i4) * F + f] + c5 * table[(off + i5) * F + f]
          + c6 * table[(off + i6) * F + f] + c7 * table[(off + i7) * F + f];
      }
    }
  }
}

/**
 * The WebAssembly lookup (hashgrid.wasm, compiled from hashgrid.wat) with the feature table copied into
 * its memory at offset 0. reserve(count, K, inDim, bits) grows the memory for a batch of count rays
 * (and copies the empty-space bits in) and returns the addresses and views of the rays (o, d), the
 * hit bytes, the unit-cube points and a function viewing the features (valid until the next reserve).
 * The module uses SIMD128: where WebAssembly has no SIMD it does not compile, and the caller keeps the
 * JS lookup.
 * @param {BufferSource} bytes hashgrid.wasm  @param {Float32Array} table the feature table
 */
export function wasmKernel(bytes, table) {
  const instance = new WebAssembly.Instance(new WebAssembly.Module(bytes), {});
  const memory = instance.exports.memory;
  const tableBytes = table.length * 4;
  const ensure = (total) => {
    const pages = Math.ceil(total / 65536) - memory.buffer.byteLength / 65536;
    if (pages > 0) memory.grow(pages);
  };
  ensure(tableBytes);
  new Float32Array(memory.buffer, 0, table.length).set(table);
  const align = (x) => Math.ceil(x / 8) * 8;
  return {
    exports: instance.exports,
    reserve(count, K, inDim, bits) {
      const bitsPtr = tableBytes, oPtr = align(bitsPtr + (bits ? bits.length : 0)), dPtr = oPtr + 12 * count;
      // the kernel reads the points in groups of four (48 bytes past the last) and keeps the K bin
      // centres at tsPtr (f64, one spare: it computes points in pairs)
      const hitPtr = dPtr + 12 * count, unitPtr = align(hitPtr + count), featPtr = unitPtr + 12 * K * count + 48;
      const tsPtr = featPtr + 4 * inDim * count;
      ensure(tsPtr + 8 * (K + 1));
      const buf = memory.buffer;
      if (bits) new Uint8Array(buf, bitsPtr, bits.length).set(bits);
      return {
        bitsPtr, oPtr, dPtr, hitPtr, unitPtr, featPtr, tsPtr,
        o: new Float32Array(buf, oPtr, 3 * count), d: new Float32Array(buf, dPtr, 3 * count),
        hit: new Uint8Array(buf, hitPtr, count), unit: new Float32Array(buf, unitPtr, 3 * K * count),
        features: (floats) => new Float32Array(buf, featPtr, floats),
      };
    },
  };
}
