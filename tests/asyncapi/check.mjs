// Validates AsyncAPI documents with the AsyncAPI parser, offline:
//   node tests/asyncapi/check.mjs docs/contract/asyncapi.json [more files…]
// Fails (exit 1) on any error the parser reports: the document's structure against the
// AsyncAPI 3.0 schema, every $ref, every payload schema, and the spec's own rules.
import { readFile } from 'node:fs/promises';
import { Parser, DiagnosticSeverity } from '@asyncapi/parser';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: node check.mjs ASYNCAPI.json…');
  process.exit(2);
}

const parser = new Parser();
let failed = false;
for (const file of files) {
  const text = await readFile(file, 'utf8');
  const { document, diagnostics } = await parser.parse(text, { source: file });
  const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
  for (const d of errors) {
    console.error(`${file}: ${d.code}: ${d.message} at ${d.path.join('/')}`);
  }
  if (!document || errors.length > 0) {
    failed = true;
    continue;
  }
  const channels = document.channels().length;
  const operations = document.operations().length;
  const messages = document.components().messages().length;
  // A document that parses but describes nothing would pass trivially.
  if (channels === 0 || operations === 0 || messages === 0) {
    console.error(`${file}: it describes ${channels} channels, ${operations} operations, ${messages} messages`);
    failed = true;
    continue;
  }
  const warnings = diagnostics.length - errors.length;
  console.log(
    `${file}: valid AsyncAPI ${document.version()}: ${channels} channels, ` +
      `${operations} operations, ${messages} messages (${warnings} style hints)`
  );
}
process.exit(failed ? 1 : 0);
