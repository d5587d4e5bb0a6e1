// An editor extension shipped by the example plugin: it logs once the editor has loaded it.
console.log("nodegraph-example extension loaded");
