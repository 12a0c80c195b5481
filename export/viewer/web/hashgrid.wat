;; The viewer's hash-grid encoding in WebAssembly with SIMD128 (every browser with WebAssembly threads
;; has it): pass 1 of encoder.js (the points of every ray and the empty-space test, f64) and one level's
;; trilinear features of every point, two features per level (cuda/hashgrid_ref.py; the same
;; arithmetic as encodeLevel in encoder.js, in f32, bit for bit the scalar kernel this replaced: no
;; operation is reordered, lanes only run four points at once).
;; Built into hashgrid.wasm by scripts/build_wasm.mjs (wabt from npm); a test checks the two agree.
;;
;; Memory (all offsets in bytes, set by encoder.js): the feature table (f32 pairs, the layout of
;; HashGridSpec), the points in the grid's unit cube (f32 x, y, z per point, K points per ray, then 48
;; bytes of padding: the last group of four points is read whole), the features out (f32, row-major
;; [rays, inDim]).
(module
  (memory (export "memory") 1)

  ;; i mod size in every lane (the boundary wrap of a dense level's layout)
  (func $wrap (param $v v128) (param $size i32) (result v128)
    (local.set $v (i32x4.replace_lane 0 (local.get $v)
      (i32.rem_u (i32x4.extract_lane 0 (local.get $v)) (local.get $size))))
    (local.set $v (i32x4.replace_lane 1 (local.get $v)
      (i32.rem_u (i32x4.extract_lane 1 (local.get $v)) (local.get $size))))
    (local.set $v (i32x4.replace_lane 2 (local.get $v)
      (i32.rem_u (i32x4.extract_lane 2 (local.get $v)) (local.get $size))))
    (i32x4.replace_lane 3 (local.get $v)
      (i32.rem_u (i32x4.extract_lane 3 (local.get $v)) (local.get $size))))

  ;; level: for rays j < n and points k < K, write the two features of the level at
  ;; feat + j * rowBytes + k * pointBytes + levelBytes. Four points at a time (consecutive in the flat
  ;; order of the n K points, across rays).
  (func (export "level")
    (param $unit i32) (param $n i32) (param $K i32) (param $feat i32)
    (param $rowBytes i32) (param $pointBytes i32) (param $levelBytes i32)
    (param $scale f32) (param $table i32) (param $dense i32) (param $R i32) (param $size i32)
    (param $mask i32) (param $p1 i32) (param $p2 i32)
    (local $left i32) (local $k i32) (local $out i32) (local $R2 i32) (local $next i32)
    (local $v0 v128) (local $v1 v128) (local $v2 v128)
    (local $qx v128) (local $qy v128) (local $qz v128) (local $gx v128) (local $gy v128) (local $gz v128)
    (local $fx v128) (local $fy v128) (local $fz v128) (local $ix v128) (local $iy v128) (local $iz v128)
    (local $b v128) (local $y0 v128) (local $y1 v128) (local $z0 v128) (local $z1 v128) (local $x1 v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128)
    (local $a4 v128) (local $a5 v128) (local $a6 v128) (local $a7 v128)
    (local $w00 v128) (local $w10 v128) (local $w01 v128) (local $w11 v128) (local $wx v128)
    (local $c0 v128) (local $c1 v128) (local $c2 v128) (local $c3 v128)
    (local $c4 v128) (local $c5 v128) (local $c6 v128) (local $c7 v128) (local $s v128)
    (local.set $R2 (i32.mul (local.get $R) (local.get $R)))
    (local.set $left (i32.mul (local.get $n) (local.get $K)))
    (local.set $k (i32.const 0))
    (local.set $out (i32.add (local.get $feat) (local.get $levelBytes)))
    ;; after the last point of a row: from its slot to the next row's first
    (local.set $next (i32.sub (i32.add (local.get $rowBytes) (local.get $pointBytes))
                              (i32.mul (local.get $K) (local.get $pointBytes))))
    (block $done
      (loop $groups
        (br_if $done (i32.le_s (local.get $left) (i32.const 0)))
        ;; x0 y0 z0 x1 | y1 z1 x2 y2 | z2 x3 y3 z3 -> x, y, z of the four points
        (local.set $v0 (v128.load (local.get $unit)))
        (local.set $v1 (v128.load offset=16 (local.get $unit)))
        (local.set $v2 (v128.load offset=32 (local.get $unit)))
        (local.set $qx (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 20 21 22 23
          (i8x16.shuffle 0 1 2 3 12 13 14 15 24 25 26 27 0 1 2 3 (local.get $v0) (local.get $v1))
          (local.get $v2)))
        (local.set $qy (i8x16.shuffle 0 1 2 3 4 5 6 7 8 9 10 11 24 25 26 27
          (i8x16.shuffle 4 5 6 7 16 17 18 19 28 29 30 31 0 1 2 3 (local.get $v0) (local.get $v1))
          (local.get $v2)))
        (local.set $qz (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 28 29 30 31
          (i8x16.shuffle 8 9 10 11 20 21 22 23 0 1 2 3 0 1 2 3 (local.get $v0) (local.get $v1))
          (local.get $v2)))
        (if (i32.lt_s (local.get $left) (i32.const 4))
          (then ;; the last group: the lanes past the end look up the point 0 (never stored)
            (local.set $s (i32x4.lt_s (v128.const i32x4 0 1 2 3) (i32x4.splat (local.get $left))))
            (local.set $qx (v128.and (local.get $qx) (local.get $s)))
            (local.set $qy (v128.and (local.get $qy) (local.get $s)))
            (local.set $qz (v128.and (local.get $qz) (local.get $s)))))
        ;; q = u * scale + 0.5, its cell and the fractions
        (local.set $qx (f32x4.add (f32x4.mul (local.get $qx) (f32x4.splat (local.get $scale)))
                                  (f32x4.splat (f32.const 0.5))))
        (local.set $qy (f32x4.add (f32x4.mul (local.get $qy) (f32x4.splat (local.get $scale)))
                                  (f32x4.splat (f32.const 0.5))))
        (local.set $qz (f32x4.add (f32x4.mul (local.get $qz) (f32x4.splat (local.get $scale)))
                                  (f32x4.splat (f32.const 0.5))))
        (local.set $gx (f32x4.floor (local.get $qx)))
        (local.set $gy (f32x4.floor (local.get $qy)))
        (local.set $gz (f32x4.floor (local.get $qz)))
        (local.set $fx (f32x4.sub (local.get $qx) (local.get $gx)))
        (local.set $fy (f32x4.sub (local.get $qy) (local.get $gy)))
        (local.set $fz (f32x4.sub (local.get $qz) (local.get $gz)))
        (local.set $ix (i32x4.trunc_sat_f32x4_s (local.get $gx)))
        (local.set $iy (i32x4.trunc_sat_f32x4_s (local.get $gy)))
        (local.set $iz (i32x4.trunc_sat_f32x4_s (local.get $gz)))
        ;; corner c = x + 2 y + 4 z
        (if (local.get $dense)
          (then
            (local.set $b (i32x4.add (i32x4.add (local.get $ix) (i32x4.mul (local.get $iy) (i32x4.splat (local.get $R))))
                                     (i32x4.mul (local.get $iz) (i32x4.splat (local.get $R2)))))
            (local.set $a0 (local.get $b))
            (local.set $a1 (i32x4.add (local.get $b) (i32x4.splat (i32.const 1))))
            (local.set $a2 (i32x4.add (local.get $b) (i32x4.splat (local.get $R))))
            (local.set $a3 (i32x4.add (local.get $a2) (i32x4.splat (i32.const 1))))
            (local.set $a4 (i32x4.add (local.get $b) (i32x4.splat (local.get $R2))))
            (local.set $a5 (i32x4.add (local.get $a4) (i32x4.splat (i32.const 1))))
            (local.set $a6 (i32x4.add (local.get $a4) (i32x4.splat (local.get $R))))
            (local.set $a7 (i32x4.add (local.get $a6) (i32x4.splat (i32.const 1))))
            ;; the boundary wrap of the layout (identity for a point whose last corner is in range)
            (if (v128.any_true (i32x4.ge_u (local.get $a7) (i32x4.splat (local.get $size))))
              (then
                (local.set $a0 (call $wrap (local.get $a0) (local.get $size)))
                (local.set $a1 (call $wrap (local.get $a1) (local.get $size)))
                (local.set $a2 (call $wrap (local.get $a2) (local.get $size)))
                (local.set $a3 (call $wrap (local.get $a3) (local.get $size)))
                (local.set $a4 (call $wrap (local.get $a4) (local.get $size)))
                (local.set $a5 (call $wrap (local.get $a5) (local.get $size)))
                (local.set $a6 (call $wrap (local.get $a6) (local.get $size)))
                (local.set $a7 (call $wrap (local.get $a7) (local.get $size))))))
          (else
            (local.set $y0 (i32x4.mul (local.get $iy) (i32x4.splat (local.get $p1))))
            (local.set $y1 (i32x4.mul (i32x4.add (local.get $iy) (i32x4.splat (i32.const 1)))
                                      (i32x4.splat (local.get $p1))))
            (local.set $z0 (i32x4.mul (local.get $iz) (i32x4.splat (local.get $p2))))
            (local.set $z1 (i32x4.mul (i32x4.add (local.get $iz) (i32x4.splat (i32.const 1)))
                                      (i32x4.splat (local.get $p2))))
            (local.set $x1 (i32x4.add (local.get $ix) (i32x4.splat (i32.const 1))))
            (local.set $b (i32x4.splat (local.get $mask)))
            (local.set $a0 (v128.and (v128.xor (local.get $ix) (v128.xor (local.get $y0) (local.get $z0)))
                                     (local.get $b)))
            (local.set $a1 (v128.and (v128.xor (local.get $x1) (v128.xor (local.get $y0) (local.get $z0)))
                                     (local.get $b)))
            (local.set $a2 (v128.and (v128.xor (local.get $ix) (v128.xor (local.get $y1) (local.get $z0)))
                                     (local.get $b)))
            (local.set $a3 (v128.and (v128.xor (local.get $x1) (v128.xor (local.get $y1) (local.get $z0)))
                                     (local.get $b)))
            (local.set $a4 (v128.and (v128.xor (local.get $ix) (v128.xor (local.get $y0) (local.get $z1)))
                                     (local.get $b)))
            (local.set $a5 (v128.and (v128.xor (local.get $x1) (v128.xor (local.get $y0) (local.get $z1)))
                                     (local.get $b)))
            (local.set $a6 (v128.and (v128.xor (local.get $ix) (v128.xor (local.get $y1) (local.get $z1)))
                                     (local.get $b)))
            (local.set $a7 (v128.and (v128.xor (local.get $x1) (v128.xor (local.get $y1) (local.get $z1)))
                                     (local.get $b)))))
        ;; separable weights
        (local.set $s (f32x4.splat (f32.const 1)))
        (local.set $w00 (f32x4.mul (f32x4.sub (local.get $s) (local.get $fy)) (f32x4.sub (local.get $s) (local.get $fz))))
        (local.set $w10 (f32x4.mul (local.get $fy) (f32x4.sub (local.get $s) (local.get $fz))))
        (local.set $w01 (f32x4.mul (f32x4.sub (local.get $s) (local.get $fy)) (local.get $fz)))
        (local.set $w11 (f32x4.mul (local.get $fy) (local.get $fz)))
        (local.set $wx (f32x4.sub (local.get $s) (local.get $fx)))
        (local.set $c0 (f32x4.mul (local.get $wx) (local.get $w00)))
        (local.set $c1 (f32x4.mul (local.get $fx) (local.get $w00)))
        (local.set $c2 (f32x4.mul (local.get $wx) (local.get $w10)))
        (local.set $c3 (f32x4.mul (local.get $fx) (local.get $w10)))
        (local.set $c4 (f32x4.mul (local.get $wx) (local.get $w01)))
        (local.set $c5 (f32x4.mul (local.get $fx) (local.get $w01)))
        (local.set $c6 (f32x4.mul (local.get $wx) (local.get $w11)))
        (local.set $c7 (f32x4.mul (local.get $fx) (local.get $w11)))
        ;; table entries are 8-byte pairs: address table + 8 i
        (local.set $b (i32x4.splat (local.get $table)))
        (local.set $a0 (i32x4.add (local.get $b) (i32x4.shl (local.get $a0) (i32.const 3))))
        (local.set $a1 (i32x4.add (local.get $b) (i32x4.shl (local.get $a1) (i32.const 3))))
        (local.set $a2 (i32x4.add (local.get $b) (i32x4.shl (local.get $a2) (i32.const 3))))
        (local.set $a3 (i32x4.add (local.get $b) (i32x4.shl (local.get $a3) (i32.const 3))))
        (local.set $a4 (i32x4.add (local.get $b) (i32x4.shl (local.get $a4) (i32.const 3))))
        (local.set $a5 (i32x4.add (local.get $b) (i32x4.shl (local.get $a5) (i32.const 3))))
        (local.set $a6 (i32x4.add (local.get $b) (i32x4.shl (local.get $a6) (i32.const 3))))
        (local.set $a7 (i32x4.add (local.get $b) (i32x4.shl (local.get $a7) (i32.const 3))))
        ;; the four points in turn (a block per lane: lane numbers are constants). The two features of
        ;; lane p: ((c0 t0 + c1 t1) + (c2 t2 + c3 t3)) + ((c4 t4 + c5 t5) + (c6 t6 + c7 t7)), the scalar
        ;; order: each product holds corners 0 and 4 (1 and 5, ...) as [c0 t0.f0, c0 t0.f1, c4 t4.f0,
        ;; c4 t4.f1] (the pairs loaded as 64 bits, the weights shuffled in), so the sum of the four
        ;; products has the two halves in lanes 0-1 and 2-3
        (block $group_done
          ;; point 0
          (local.set $s (f32x4.add
            (f32x4.add
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 0 (local.get $a4))
                           (v128.load64_zero (i32x4.extract_lane 0 (local.get $a0))))
                         (i8x16.shuffle 0 1 2 3 0 1 2 3 16 17 18 19 16 17 18 19 (local.get $c0) (local.get $c4)))
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 0 (local.get $a5))
                           (v128.load64_zero (i32x4.extract_lane 0 (local.get $a1))))
                         (i8x16.shuffle 0 1 2 3 0 1 2 3 16 17 18 19 16 17 18 19 (local.get $c1) (local.get $c5))))
            (f32x4.add
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 0 (local.get $a6))
                           (v128.load64_zero (i32x4.extract_lane 0 (local.get $a2))))
                         (i8x16.shuffle 0 1 2 3 0 1 2 3 16 17 18 19 16 17 18 19 (local.get $c2) (local.get $c6)))
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 0 (local.get $a7))
                           (v128.load64_zero (i32x4.extract_lane 0 (local.get $a3))))
                         (i8x16.shuffle 0 1 2 3 0 1 2 3 16 17 18 19 16 17 18 19 (local.get $c3) (local.get $c7))))))
          (v128.store64_lane 0 (local.get $out)
            (f32x4.add (local.get $s) (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7
                                                     (local.get $s) (local.get $s))))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (local.set $out (i32.add (local.get $out) (select (local.get $next) (local.get $pointBytes)
                                                            (i32.eq (local.get $k) (local.get $K)))))
          (if (i32.eq (local.get $k) (local.get $K)) (then (local.set $k (i32.const 0))))
          (br_if $group_done (i32.lt_s (local.get $left) (i32.const 2)))
          ;; point 1
          (local.set $s (f32x4.add
            (f32x4.add
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 1 (local.get $a4))
                           (v128.load64_zero (i32x4.extract_lane 1 (local.get $a0))))
                         (i8x16.shuffle 4 5 6 7 4 5 6 7 20 21 22 23 20 21 22 23 (local.get $c0) (local.get $c4)))
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 1 (local.get $a5))
                           (v128.load64_zero (i32x4.extract_lane 1 (local.get $a1))))
                         (i8x16.shuffle 4 5 6 7 4 5 6 7 20 21 22 23 20 21 22 23 (local.get $c1) (local.get $c5))))
            (f32x4.add
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 1 (local.get $a6))
                           (v128.load64_zero (i32x4.extract_lane 1 (local.get $a2))))
                         (i8x16.shuffle 4 5 6 7 4 5 6 7 20 21 22 23 20 21 22 23 (local.get $c2) (local.get $c6)))
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 1 (local.get $a7))
                           (v128.load64_zero (i32x4.extract_lane 1 (local.get $a3))))
                         (i8x16.shuffle 4 5 6 7 4 5 6 7 20 21 22 23 20 21 22 23 (local.get $c3) (local.get $c7))))))
          (v128.store64_lane 0 (local.get $out)
            (f32x4.add (local.get $s) (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7
                                                     (local.get $s) (local.get $s))))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (local.set $out (i32.add (local.get $out) (select (local.get $next) (local.get $pointBytes)
                                                            (i32.eq (local.get $k) (local.get $K)))))
          (if (i32.eq (local.get $k) (local.get $K)) (then (local.set $k (i32.const 0))))
          (br_if $group_done (i32.lt_s (local.get $left) (i32.const 3)))
          ;; point 2
          (local.set $s (f32x4.add
            (f32x4.add
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 2 (local.get $a4))
                           (v128.load64_zero (i32x4.extract_lane 2 (local.get $a0))))
                         (i8x16.shuffle 8 9 10 11 8 9 10 11 24 25 26 27 24 25 26 27 (local.get $c0) (local.get $c4)))
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 2 (local.get $a5))
                           (v128.load64_zero (i32x4.extract_lane 2 (local.get $a1))))
                         (i8x16.shuffle 8 9 10 11 8 9 10 11 24 25 26 27 24 25 26 27 (local.get $c1) (local.get $c5))))
            (f32x4.add
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 2 (local.get $a6))
                           (v128.load64_zero (i32x4.extract_lane 2 (local.get $a2))))
                         (i8x16.shuffle 8 9 10 11 8 9 10 11 24 25 26 27 24 25 26 27 (local.get $c2) (local.get $c6)))
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 2 (local.get $a7))
                           (v128.load64_zero (i32x4.extract_lane 2 (local.get $a3))))
                         (i8x16.shuffle 8 9 10 11 8 9 10 11 24 25 26 27 24 25 26 27 (local.get $c3) (local.get $c7))))))
          (v128.store64_lane 0 (local.get $out)
            (f32x4.add (local.get $s) (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7
                                                     (local.get $s) (local.get $s))))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (local.set $out (i32.add (local.get $out) (select (local.get $next) (local.get $pointBytes)
                                                            (i32.eq (local.get $k) (local.get $K)))))
          (if (i32.eq (local.get $k) (local.get $K)) (then (local.set $k (i32.const 0))))
          (br_if $group_done (i32.lt_s (local.get $left) (i32.const 4)))
          ;; point 3
          (local.set $s (f32x4.add
            (f32x4.add
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 3 (local.get $a4))
                           (v128.load64_zero (i32x4.extract_lane 3 (local.get $a0))))
                         (i8x16.shuffle 12 13 14 15 12 13 14 15 28 29 30 31 28 29 30 31 (local.get $c0) (local.get $c4)))
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 3 (local.get $a5))
                           (v128.load64_zero (i32x4.extract_lane 3 (local.get $a1))))
                         (i8x16.shuffle 12 13 14 15 12 13 14 15 28 29 30 31 28 29 30 31 (local.get $c1) (local.get $c5))))
            (f32x4.add
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 3 (local.get $a6))
                           (v128.load64_zero (i32x4.extract_lane 3 (local.get $a2))))
                         (i8x16.shuffle 12 13 14 15 12 13 14 15 28 29 30 31 28 29 30 31 (local.get $c2) (local.get $c6)))
              (f32x4.mul (v128.load64_lane 1 (i32x4.extract_lane 3 (local.get $a7))
                           (v128.load64_zero (i32x4.extract_lane 3 (local.get $a3))))
                         (i8x16.shuffle 12 13 14 15 12 13 14 15 28 29 30 31 28 29 30 31 (local.get $c3) (local.get $c7))))))
          (v128.store64_lane 0 (local.get $out)
            (f32x4.add (local.get $s) (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7
                                                     (local.get $s) (local.get $s))))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (local.set $out (i32.add (local.get $out) (select (local.get $next) (local.get $pointBytes)
                                                            (i32.eq (local.get $k) (local.get $K)))))
          (if (i32.eq (local.get $k) (local.get $K)) (then (local.set $k (i32.const 0)))))
        (local.set $unit (i32.add (local.get $unit) (i32.const 48)))
        (local.set $left (i32.sub (local.get $left) (i32.const 4)))
        (br $groups))))

  ;; points: for each of count world rays (f32 o, d at $o, $d), the slab test against the content box
  ;; within [near, far], the K bin centres of the segment inside it (clip) or of [near, far], mapped to
  ;; the grid's unit cube and clamped, and the empty-space test on them ($G > 0: the G^3 bits at $bits,
  ;; x-major, first cell in the high bit). Kept rays' points go to $unit in order (f32 x, y, z); $hit gets
  ;; one byte per ray; $ts: K + 1 f64 of scratch (the bin centres (k + 0.5) / K). Returns the number kept.
  ;; f64 arithmetic, as encoder.js's pass 1; two points at a time (k and k + 1 in the lanes of f64x2).
  ;; The clamps use pmin/pmax (one instruction; min/max differ from them only on NaN and on -0, which
  ;; (p + 1) 0.5 and floor(u G) with u >= 0 never are).
  (func (export "points")
    (param $o i32) (param $d i32) (param $count i32) (param $unit i32) (param $hit i32) (param $K i32)
    (param $x0 f64) (param $y0 f64) (param $z0 f64) (param $x1 f64) (param $y1 f64) (param $z1 f64)
    (param $near f64) (param $far f64)
    (param $cx f64) (param $cy f64) (param $cz f64) (param $hx f64) (param $hy f64) (param $hz f64)
    (param $clip i32) (param $bits i32) (param $G i32) (param $ts i32) (result i32)
    (local $j i32) (local $k i32) (local $n i32) (local $q i32) (local $set i32) (local $c i32) (local $tk i32)
    (local $ox f64) (local $oy f64) (local $oz f64) (local $dx f64) (local $dy f64) (local $dz f64)
    (local $ax f64) (local $bx f64) (local $ay f64) (local $by f64) (local $az f64) (local $bz f64)
    (local $tin f64) (local $tout f64) (local $len f64) (local $t f64)
    (local $sx v128) (local $sy v128) (local $sz v128) (local $vx v128) (local $vy v128) (local $vz v128)
    (local $tt v128) (local $ux v128) (local $uy v128) (local $uz v128) (local $fxy v128) (local $fz v128)
    (local $cxy v128) (local $Gf v128) (local $Gi v128) (local $top v128) (local $two i32)
    (local $zero v128) (local $one v128) (local $half v128)
    (local.set $Gf (f64x2.splat (f64.convert_i32_s (local.get $G))))
    (local.set $Gi (i32x4.splat (local.get $G)))
    (local.set $top (f64x2.splat (f64.sub (f64.convert_i32_s (local.get $G)) (f64.const 1))))
    (local.set $zero (f64x2.splat (f64.const 0)))
    (local.set $one (f64x2.splat (f64.const 1)))
    (local.set $half (f64x2.splat (f64.const 0.5)))
    ;; the bin centres, once (and the spare, k = K)
    (local.set $k (i32.const 0))
    (block $ts_done
      (loop $tsl
        (br_if $ts_done (i32.gt_u (local.get $k) (local.get $K)))
        (f64.store (i32.add (local.get $ts) (i32.shl (local.get $k) (i32.const 3)))
          (f64.div (f64.add (f64.convert_i32_s (local.get $k)) (f64.const 0.5)) (f64.convert_i32_s (local.get $K))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $tsl)))
    (local.set $j (i32.const 0))
    (local.set $n (i32.const 0))
    (block $done
      (loop $rays
        (br_if $done (i32.ge_u (local.get $j) (local.get $count)))
        (i32.store8 (i32.add (local.get $hit) (local.get $j)) (i32.const 0))
        (local.set $ox (f64.promote_f32 (f32.load (local.get $o))))
        (local.set $oy (f64.promote_f32 (f32.load offset=4 (local.get $o))))
        (local.set $oz (f64.promote_f32 (f32.load offset=8 (local.get $o))))
        (local.set $dx (f64.promote_f32 (f32.load (local.get $d))))
        (local.set $dy (f64.promote_f32 (f32.load offset=4 (local.get $d))))
        (local.set $dz (f64.promote_f32 (f32.load offset=8 (local.get $d))))
        (if (f64.lt (f64.abs (local.get $dx)) (f64.const 1e-12)) (then (local.set $dx (f64.const 1e-12))))
        (if (f64.lt (f64.abs (local.get $dy)) (f64.const 1e-12)) (then (local.set $dy (f64.const 1e-12))))
        (if (f64.lt (f64.abs (local.get $dz)) (f64.const 1e-12)) (then (local.set $dz (f64.const 1e-12))))
        ;; the slab test of core.rays.ray_aabb_intersect (multiplying by 1 / d, as encoder.js)
        (local.set $t (f64.div (f64.const 1) (local.get $dx)))
        (local.set $ax (f64.mul (f64.sub (local.get $x0) (local.get $ox)) (local.get $t)))
        (local.set $bx (f64.mul (f64.sub (local.get $x1) (local.get $ox)) (local.get $t)))
        (local.set $t (f64.div (f64.const 1) (local.get $dy)))
        (local.set $ay (f64.mul (f64.sub (local.get $y0) (local.get $oy)) (local.get $t)))
        (local.set $by (f64.mul (f64.sub (local.get $y1) (local.get $oy)) (local.get $t)))
        (local.set $t (f64.div (f64.const 1) (local.get $dz)))
        (local.set $az (f64.mul (f64.sub (local.get $z0) (local.get $oz)) (local.get $t)))
        (local.set $bz (f64.mul (f64.sub (local.get $z1) (local.get $oz)) (local.get $t)))
        (local.set $tin (f64.max (f64.max (f64.min (local.get $ax) (local.get $bx))
                                          (f64.min (local.get $ay) (local.get $by)))
                                 (f64.max (f64.min (local.get $az) (local.get $bz)) (local.get $near))))
        (local.set $tout (f64.min (f64.min (f64.max (local.get $ax) (local.get $bx))
                                           (f64.max (local.get $ay) (local.get $by)))
                                  (f64.min (f64.max (local.get $az) (local.get $bz)) (local.get $far))))
        (if (f64.lt (local.get $tin) (local.get $tout))
          (then
            (if (i32.eqz (local.get $clip))
              (then (local.set $tin (local.get $near)) (local.set $tout (local.get $far))))
            (local.set $sx (f64x2.splat (f64.div (f64.sub (f64.add (local.get $ox) (f64.mul (local.get $tin) (local.get $dx)))
                                             (local.get $cx)) (local.get $hx))))
            (local.set $sy (f64x2.splat (f64.div (f64.sub (f64.add (local.get $oy) (f64.mul (local.get $tin) (local.get $dy)))
                                             (local.get $cy)) (local.get $hy))))
            (local.set $sz (f64x2.splat (f64.div (f64.sub (f64.add (local.get $oz) (f64.mul (local.get $tin) (local.get $dz)))
                                             (local.get $cz)) (local.get $hz))))
            (local.set $len (f64.sub (local.get $tout) (local.get $tin)))
            (local.set $vx (f64x2.splat (f64.div (f64.mul (local.get $len) (local.get $dx)) (local.get $hx))))
            (local.set $vy (f64x2.splat (f64.div (f64.mul (local.get $len) (local.get $dy)) (local.get $hy))))
            (local.set $vz (f64x2.splat (f64.div (f64.mul (local.get $len) (local.get $dz)) (local.get $hz))))
            (local.set $set (i32.eqz (local.get $G)))
            (local.set $q (i32.add (local.get $unit) (i32.mul (local.get $n) (i32.mul (local.get $K) (i32.const 12)))))
            (local.set $tk (local.get $ts))
            (local.set $k (i32.const 0))
            (block $pts_done
              (loop $pts
                (br_if $pts_done (i32.ge_u (local.get $k) (local.get $K)))
                ;; points k and k + 1 in the two lanes (t of k = K: a spare slot, never stored)
                ;; u = min(max((s + t v + 1) 0.5, 0), 1)
                (local.set $tt (v128.load (local.get $tk)))
                (local.set $ux (f64x2.pmin (f64x2.pmax (f64x2.mul (f64x2.add (f64x2.add (local.get $sx)
                  (f64x2.mul (local.get $tt) (local.get $vx))) (local.get $one)) (local.get $half)) (local.get $zero))
                  (local.get $one)))
                (local.set $uy (f64x2.pmin (f64x2.pmax (f64x2.mul (f64x2.add (f64x2.add (local.get $sy)
                  (f64x2.mul (local.get $tt) (local.get $vy))) (local.get $one)) (local.get $half)) (local.get $zero))
                  (local.get $one)))
                (local.set $uz (f64x2.pmin (f64x2.pmax (f64x2.mul (f64x2.add (f64x2.add (local.get $sz)
                  (f64x2.mul (local.get $tt) (local.get $vz))) (local.get $one)) (local.get $half)) (local.get $zero))
                  (local.get $one)))
                (local.set $fz (f32x4.demote_f64x2_zero (local.get $uz)))
                (local.set $fxy (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23
                  (f32x4.demote_f64x2_zero (local.get $ux)) (f32x4.demote_f64x2_zero (local.get $uy))))
                (local.set $two (i32.lt_u (i32.add (local.get $k) (i32.const 1)) (local.get $K)))
                (v128.store64_lane 0 (local.get $q) (local.get $fxy))
                (v128.store32_lane offset=8 0 (local.get $q) (local.get $fz))
                (if (local.get $two)
                  (then
                    (v128.store64_lane offset=12 1 (local.get $q) (local.get $fxy))
                    (v128.store32_lane offset=20 1 (local.get $q) (local.get $fz))))
                (if (i32.eqz (local.get $set))
                  (then
                    ;; the cells of floor(u G), clamped to G - 1
                    (local.set $cxy (i32x4.add (i32x4.mul (i32x4.add (i32x4.mul
                      (i32x4.trunc_sat_f64x2_s_zero (f64x2.pmin (f64x2.floor (f64x2.mul (local.get $ux) (local.get $Gf))) (local.get $top)))
                      (local.get $Gi))
                      (i32x4.trunc_sat_f64x2_s_zero (f64x2.pmin (f64x2.floor (f64x2.mul (local.get $uy) (local.get $Gf))) (local.get $top))))
                      (local.get $Gi))
                      (i32x4.trunc_sat_f64x2_s_zero (f64x2.pmin (f64x2.floor (f64x2.mul (local.get $uz) (local.get $Gf))) (local.get $top)))))
                    (local.set $c (i32x4.extract_lane 0 (local.get $cxy)))
                    (local.set $set (i32.and (i32.shr_u
                      (i32.load8_u (i32.add (local.get $bits) (i32.shr_u (local.get $c) (i32.const 3))))
                      (i32.sub (i32.const 7) (i32.and (local.get $c) (i32.const 7)))) (i32.const 1)))
                    (if (local.get $two)
                      (then
                        (local.set $c (i32x4.extract_lane 1 (local.get $cxy)))
                        (local.set $set (i32.or (local.get $set) (i32.and (i32.shr_u
                          (i32.load8_u (i32.add (local.get $bits) (i32.shr_u (local.get $c) (i32.const 3))))
                          (i32.sub (i32.const 7) (i32.and (local.get $c) (i32.const 7)))) (i32.const 1))))))))
                (local.set $q (i32.add (local.get $q) (i32.const 24)))
                (local.set $tk (i32.add (local.get $tk) (i32.const 16)))
                (local.set $k (i32.add (local.get $k) (i32.const 2)))
                (br $pts)))
            (if (local.get $set)
              (then
                (i32.store8 (i32.add (local.get $hit) (local.get $j)) (i32.const 1))
                (local.set $n (i32.add (local.get $n) (i32.const 1)))))))
        (local.set $o (i32.add (local.get $o) (i32.const 12)))
        (local.set $d (i32.add (local.get $d) (i32.const 12)))
        (local.set $j (i32.add (local.get $j) (i32.const 1)))
        (br $rays)))
    (local.get $n))
)
