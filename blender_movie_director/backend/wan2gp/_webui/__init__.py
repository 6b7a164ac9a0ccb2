"""The web-UI transport: WanGP's Gradio app, driven as the browser drives it.

``session.py`` is the only module of the project that imports ``gradio_client``; ``endpoints.py`` resolves
WanGP's generation chain from the server's ``/config``; ``fingerprint.py`` tells WanGP and its version;
``transport.py`` holds one server's connection, forms and files; ``runner.py`` runs one shot through the chain.
"""
