// The hash-grid student's input vector in plain JS (student/encoding.py HashRayEncoder, the student's
// own sampling and cuda/hashgrid_ref.py's lookup): K points per ray in the part of [near, far] inside
// the content box, normalised by the box, and the trilinear features of every point at every level.
// One loop per point instead of ONNX Runtime's tensor-at-a-time ops: the viewer's fast path.

/** The exact slab test of core.rays.ray_aabb_intersect for one ray: [tIn, tOut, hit]. */
function segment(ox, oy, oz, dx, dy, dz, box, near, far) {
  const o = [ox, oy, oz], d = [dx, dy, dz];
  let tIn = -Infinity, tOut = Infinity;
  for (let a = 0; a < 3; a++) {
    const da = Math.abs(d[a]) < 1e-12 ? 1e-12 : d[a];
    const inv = 1 / da;
    const t0 = (box[a] - o[a]) * inv, t1 = (box[a + 3] - o[a]) * inv;
    tIn = Math.max(tIn, Math.min(t0, t1));
    tOut = Math.min(tOut, Math.max(t0, t1));
  }
  tIn = Math.max(tIn, near);
  tOut = Math.min(tOut, far);
  const hit = tIn < tOut;
  return [tIn, hit ? tOut : tIn, hit];
}

/**
 * Features of rays (only those with hit[i] set), row-major [count, in_dim].
 * @param {Float32Array} o origins [N*3]   @param {Float32Array} d unit directions [N*3]
 * @param {Int32Array} rows indices of the rays to encode
 * @param {object} enc encoder facts (export/split.py encoder_facts)  @param {Float32Array} table features
 * @returns {{features: Float32Array, hit: Uint8Array}} hit: 0 where the exact test says the ray misses
 */
export function encodeRays(o, d, rows, enc, table) {
  const K = enc.n_points, g = enc.grid, L = g.n_levels, F = g.n_features, nf = enc.point_freqs;
  const inDim = enc.in_dim, count = rows.length;
  const features = new Float32Array(count * inDim);
  const hit = new Uint8Array(count);
  const c = enc.center, h = enc.half_extent, clip = enc.ray_range === "box";
  const T = 2 ** g.log2_hashmap_size, mask = T - 1;
  const p1 = g.primes[1] | 0, p2 = g.primes[2] | 0;
  const dense = g.resolutions.map((r) => r ** 3 <= T);
  const pts = new Float64Array(K * 3);
  for (let j = 0; j < count; j++) {
    const i = rows[j];
    const ox = o[3 * i], oy = o[3 * i + 1], oz = o[3 * i + 2], dx = d[3 * i], dy = d[3 * i + 1], dz = d[3 * i + 2];
    let [tIn, tOut, ok] = segment(ox, oy, oz, dx, dy, dz, enc.box, enc.near, enc.far);
    hit[j] = ok ? 1 : 0;
    if (!ok) continue;
    if (clip) { tIn = Math.min(Math.max(tIn, enc.near), enc.far); tOut = Math.min(Math.max(tOut, enc.near), enc.far); } else { tIn = enc.near; tOut = enc.far; }
    const sx = (ox + tIn * dx - c[0]) / h[0], sy = (oy + tIn * dy - c[1]) / h[1], sz = (oz + tIn * dz - c[2]) / h[2];
    const len = tOut - tIn;
    const vx = len * dx / h[0], vy = len * dy / h[1], vz = len * dz / h[2];
    const base = j * inDim;
    for (let k = 0; k < K; k++) {
      const t = (k + 0.5) / K;
      const px = sx + t * vx, py = sy + t * vy, pz = sz + t * vz;
      pts[3 * k] = px; pts[3 * k + 1] = py; pts[3 * k + 2] = pz;
      const ux = Math.min(Math.max((px + 1) * 0.5, 0), 1);
      const uy = Math.min(Math.max((py + 1) * 0.5, 0), 1);
      const uz = Math.min(Math.max((pz + 1) * 0.5, 0), 1);
      for (let l = 0; l < L; l++) {
        const s = g.scales[l], R = g.resolutions[l], size = g.sizes[l], off = g.offsets[l];
        const qx = ux * s + 0.5, qy = uy * s + 0.5, qz = uz * s + 0.5;
        const ix = Math.floor(qx), iy = Math.floor(qy), iz = Math.floor(qz);
        const fx = qx - ix, fy = qy - iy, fz = qz - iz;
        const out = base + (k * L + l) * F;
        for (let corner = 0; corner < 8; corner++) {
          const cx = corner & 1, cy = (corner >> 1) & 1, cz = corner >> 2;
          const w = (cx ? fx : 1 - fx) * (cy ? fy : 1 - fy) * (cz ? fz : 1 - fz);
          let idx;
          if (dense[l]) {
            idx = ((ix + cx) + (iy + cy) * R + (iz + cz) * R * R) % size;
          } else {
            idx = ((ix + cx) ^ Math.imul(iy + cy, p1) ^ Math.imul(iz + cz, p2)) & mask;
          }
          const p = (off + idx) * F;
          for (let f = 0; f < F; f++) features[out + f] += w * table[p + f];
        }
      }
    }
    if (nf >= 0) { // [x, sin(2^k x), cos(2^k x)] of the K x 3 normalised coordinates, after the features
      const n3 = K * 3, pe = base + K * L * F;
      for (let a = 0; a < n3; a++) {
        features[pe + a] = pts[a];
        for (let q = 0; q < nf; q++) {
          const arg = pts[a] * 2 ** q;
          features[pe + n3 + a * nf + q] = Math.sin(arg);
          features[pe + n3 * (1 + nf) + a * nf + q] = Math.cos(arg);
        }
      }
    }
  }
  return { features, hit };
}
