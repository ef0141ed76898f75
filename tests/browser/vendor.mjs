// Copies the chart library the console uses (uPlot, MIT) from node_modules
// into gateway/web/vendor/, where the gateway compiles it in. `npm run vendor`
// after changing uplot's version in package.json; browser.test.mjs fails
// while the two copies differ, so the vendored file never drifts from the pin.
import { copyFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
export const VENDORED = [
  ['node_modules/uplot/dist/uPlot.iife.min.js', '../../gateway/web/vendor/uPlot.iife.min.js'],
  ['node_modules/uplot/dist/uPlot.min.css', '../../gateway/web/vendor/uPlot.min.css'],
].map(([from, to]) => [here(from), here(to)]);

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const [from, to] of VENDORED) copyFileSync(from, to);
}
