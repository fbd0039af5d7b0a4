// Starts fauxqs, the local SQS stand-in, on 127.0.0.1 only (its own CLI binds 0.0.0.0).
// Usage: node fauxqs.mjs <node_modules dir> <port>
// Queue URLs name the address the client used (http://127.0.0.1:<port>/<account>/<queue>),
// not fauxqs' default `sqs.<region>.localhost` host, which does not resolve everywhere.
import { pathToFileURL } from "node:url";
import { join } from "node:path";

const [modules, portArg] = process.argv.slice(2);
const port = Number(portArg);
if (!modules || !Number.isInteger(port) || port <= 0) {
  console.error("usage: node fauxqs.mjs <node_modules dir> <port>");
  process.exit(2);
}
const dist = join(modules, "fauxqs", "dist");
const { buildApp } = await import(pathToFileURL(join(dist, "app.js")).href);
const { SqsStore } = await import(pathToFileURL(join(dist, "sqs", "sqsStore.js")).href);

const sqsStore = new SqsStore();
sqsStore.host = "";
const app = buildApp({ logger: false, stores: { sqsStore } });
await app.listen({ port, host: "127.0.0.1" });
console.log(`fauxqs listening on http://127.0.0.1:${port}`);
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => app.close().then(() => process.exit(0)));
}
