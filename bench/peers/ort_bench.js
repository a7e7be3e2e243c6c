// ONNX Runtime side of bench/bench_peers.sh: inference latency of one exported model, one JSON
// object on stdout.
//   node bench/peers/ort_bench.js --model FILE.onnx --batch N --threads T --runs R --warmup W
//        [--channels 3 --size 224]
// Session: graphOptimizationLevel 'all', intraOpNumThreads T, interOpNumThreads 1, sequential
// execution, CPU execution provider. The input is the batch `convnet bench` uses: element i in
// NHWC order is ((i * 2654435761) mod 2^32 mod 1000) / 500 - 1, laid out here as NCHW.
'use strict';
const path = require('path');
const ort = require(path.join(__dirname, 'node_modules', 'onnxruntime-node'));

function args() {
  const a = { batch: 1, threads: 1, runs: 10, warmup: 3, channels: 3, size: 224, model: '' };
  const v = process.argv.slice(2);
  for (let i = 0; i < v.length; i += 2) {
    const k = v[i].replace(/^--/, '');
    if (!(k in a) || i + 1 >= v.length) {
      console.error(`ort_bench: bad option '${v[i]}'`);
      process.exit(2);
    }
    a[k] = k === 'model' ? v[i + 1] : Number(v[i + 1]);
  }
  if (!a.model) {
    console.error('ort_bench: --model FILE.onnx is required');
    process.exit(2);
  }
  return a;
}

function convnetInput(n, c, h, w) {
  const x = new Float32Array(n * c * h * w);
  let i = 0; // index in NHWC order, as convnet bench counts
  for (let b = 0; b < n; b++)
    for (let y = 0; y < h; y++)
      for (let xx = 0; xx < w; xx++)
        for (let ch = 0; ch < c; ch++, i++) {
          const v = (Math.imul(i, 2654435761) >>> 0) % 1000;
          x[((b * c + ch) * h + y) * w + xx] = Math.fround(Math.fround(v) / 500) - 1;
        }
  return x;
}

function median(t) {
  const s = [...t].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : 0.5 * (s[m - 1] + s[m]);
}

async function main() {
  const a = args();
  const session = await ort.InferenceSession.create(a.model, {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: a.threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
  const dims = [a.batch, a.channels, a.size, a.size];
  const x = new ort.Tensor('float32', convnetInput(...dims), dims);
  const feeds = { [session.inputNames[0]]: x };
  const times = [];
  for (let r = -a.warmup; r < a.runs; r++) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    const dt = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r >= 0) times.push(dt);
  }
  const med = median(times);
  console.log(JSON.stringify({
    model: path.basename(a.model), batch: a.batch, threads: a.threads, runs: a.runs,
    warmup: a.warmup, median_ms: med, min_ms: Math.min(...times), max_ms: Math.max(...times),
    img_per_s: a.batch / (med / 1e3), onnxruntime: ort.env.versions.node,
    node: process.versions.node,
  }));
}

main().catch((e) => {
  console.error(`ort_bench: ${e.message || e}`);
  process.exit(1);
});
