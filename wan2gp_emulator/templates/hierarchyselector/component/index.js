// WanGP's HierarchySelector, drawn in the browser by gradio 5.29.0's built-in Dropdown (multiselect).
// The path is relative to /gradio_api/custom_component/<id>/client/component/index.js.
export { default } from "../../../../../assets/Index-BFvreYxE.js";
