// WanGP's image editor, drawn in the browser by gradio 5.29.0's built-in ImageEditor.
// The path is relative to /gradio_api/custom_component/<id>/client/component/index.js.
import { as as editor } from "../../../../../assets/Index-CLHSZB3E.js";
export default editor.default;
