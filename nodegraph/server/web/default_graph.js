// nodegraph's editor extension: open nodegraph's own txt2img template where the editor would show its stock
// default graph, whose nodes (UNETLoader, …) and model downloads belong to ComfyUI and not to this server.
const { app } = window.comfyAPI.app;
const { api } = window.comfyAPI.api;
const stock = window.comfyAPI.defaultGraph?.defaultGraph;
const TEMPLATE = "/workflow_templates/nodegraph/txt2img.json";
const EMPTY = { last_node_id: 0, last_link_id: 0, nodes: [], links: [], groups: [], config: {}, extra: {}, version: 0.4 };

function isStockDefault(graph) {
  if (!stock || !graph || !Array.isArray(graph.nodes)) return false;
  if (stock.id && graph.id) return stock.id === graph.id;
  const types = (g) => JSON.stringify(g.nodes.map((n) => n.type));
  return types(graph) === types(stock);
}

app.registerExtension({
  name: "nodegraph.DefaultGraph",
  async beforeConfigureGraph(graph) {
    if (!isStockDefault(graph)) return;
    let ours = EMPTY;
    try {
      const res = await api.fetchApi(TEMPLATE);
      if (res.ok) ours = await res.json();
    } catch (err) {
      console.warn("nodegraph: the txt2img template could not be loaded; starting from an empty graph", err);
    }
    // The editor configures the object it passed in, so replace its contents in place.
    for (const key of Object.keys(graph)) delete graph[key];
    Object.assign(graph, structuredClone(ours));
  },
});
