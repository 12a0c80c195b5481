// The execution provider of the viewer's sessions and the onnxruntime-web build that has it (a classic
// script: it defines the global `ort`). WebGPU when it is asked for and works, else wasm with threads.

function loadScript(file) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = file;
    s.onload = resolve;
    s.onerror = () => reject(new Error(`onnxruntime-web runtime file ${file} is missing from this folder ` +
      "(write the viewer again with python -m export.viewer)"));
    document.head.appendChild(s);
  });
}

/** Whether the browser has a WebGPU adapter that gives a device (tried and released). */
async function webgpuAvailable() {
  if (!navigator.gpu) return false;
  try {
    const adapter = await navigator.gpu.requestAdapter();
    if (!adapter) return false;
    (await adapter.requestDevice()).destroy(); // ONNX Runtime requests its own
    return true;
  } catch {
    return false;
  }
}

/**
 * Load the runtime of the provider: webgpu when asked for (ep=webgpu, or by default when the viewer was
 * written with webgpu=true), the browser's WebGPU adapter gives a device and the WebGPU build loads; else
 * wasm (ONNX Runtime's WebAssembly build, with threads when the page is cross-origin isolated).
 * @param {string|null} ep the query's ep=  @param {boolean} webgpu the viewer has the WebGPU build
 * @returns {Promise<{ep: string, warning: string|null}>} warning: ep=webgpu asked for and not given
 */
export async function loadRuntime(ep, webgpu) {
  if (webgpu && ep !== "wasm" && (await webgpuAvailable())) {
    try {
      await loadScript("ort.webgpu.min.js");
      return { ep: "webgpu", warning: null };
    } catch {
      // the wasm build below
    }
  }
  await loadScript("ort.wasm.min.js");
  const warning = ep === "webgpu" ? "ep=webgpu: no WebGPU device in this browser (or no WebGPU runtime in " +
    "this viewer); running on wasm" : null;
  return { ep: "wasm", warning };
}
