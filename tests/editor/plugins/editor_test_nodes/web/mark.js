// Editor extension of the editor test plugin: proves plugin web folders are listed, served and run.
const { app } = window.comfyAPI.app;
app.registerExtension({
  name: "nodegraph.tests.Mark",
  async setup() {
    window.__editorTestExtension = "loaded";
  },
});
