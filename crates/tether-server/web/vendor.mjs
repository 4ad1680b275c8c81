// Copies the pinned uPlot build from node_modules into ../assets/vendor/,
// which the server embeds. Run: npm ci && npm run vendor
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const target = join(here, "..", "assets", "vendor");
mkdirSync(target, { recursive: true });
for (const file of ["uPlot.iife.min.js", "uPlot.min.css"]) {
  copyFileSync(join(here, "node_modules", "uplot", "dist", file), join(target, file));
  console.log(`copied ${file}`);
}
copyFileSync(join(here, "node_modules", "uplot", "LICENSE"), join(target, "uPlot.LICENSE"));
console.log("copied LICENSE");
