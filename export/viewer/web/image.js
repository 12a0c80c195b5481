// The image model in the page: one ONNX graph from a camera (c2w [4, 4], K [3, 3], float32) to its whole
// image rgb [H, W, 3] (export/image.py), one session.run a frame and no JS encoding. Pure functions, no DOM
// (the tests run this file in Node); the file holds one output size: models.json lists one per size.
import { scaleIntrinsics } from "./camera.js";

const isImage = (m) => m.meta.decoder === "image";
const sizeOf = (m) => `${m.meta.output_size[1]}x${m.meta.output_size[0]}`; // WxH, as size= takes it

/**
 * The file to draw for the query's size=WxH: the image model of entry's precision at that output size
 * (entry itself without a size, or for a ray model, which draws any size).
 * @param {object[]} models models.json rows  @param {object} entry the row model= (or the default) names
 * @param {number[]|null} size [W, H] of the query
 * @returns {{entry: object|null, error: string|null}} error: one line naming the export command of the size
 */
export function imageModelFor(models, entry, size) {
  if (!isImage(entry) || !size) return { entry, error: null };
  const [W, H] = size;
  const same = models.filter((m) => isImage(m) && m.precision === entry.precision);
  const found = same.find((m) => sizeOf(m) === `${W}x${H}`);
  if (found) return { entry: found, error: null };
  return { entry: null, error: `size=${W}x${H}: no ${entry.precision} image model of that size in this viewer ` +
    `(have ${same.map(sizeOf).join(", ")}): export it with python -m export.onnx image_sizes=[[${H},${W}]], ` +
    "then write the viewer again with python -m export.viewer" };
}

/** The rows the variant menu offers beside entry: an image model's files of its own output size only. */
export function menuModels(models, entry) {
  return isImage(entry) ? models.filter((m) => isImage(m) && sizeOf(m) === sizeOf(entry)) : models;
}

/**
 * The inputs of an image model for pose: c2w and K (the training cameras' intrinsics scaled to the
 * output size: export.runtime.LightField.default_K), float32 row-major.
 * @param {number[]} pose 16 numbers, row-major 4x4 OpenCV camera-to-world
 * @returns {{c2w: Float32Array, K: Float32Array}} [16] and [9]
 */
export function imageFeeds(pose, meta) {
  const [H, W] = meta.output_size;
  return { c2w: Float32Array.from(pose), K: Float32Array.from(scaleIntrinsics(meta.K, meta.image_size, H, W)) };
}

/** The model's rgb [H*W*3] in [0, 1] into RGBA bytes [H*W*4] (rounded, alpha 255), as the ray models'. */
export function writeImage(rgb, pixels) {
  for (let i = 0, p = 0; i < rgb.length; i += 3, p += 4) {
    for (let c = 0; c < 3; c++) {
      const v = rgb[i + c];
      pixels[p + c] = Math.floor((v < 0 ? 0 : v > 1 ? 1 : v) * 255 + 0.5);
    }
    pixels[p + 3] = 255;
  }
}
