"""The explorer: a local web app over one or two models (`rnnlens serve`).

engine.py computes (plain data, no HTTP); server.py is the FastAPI app and the safety limits;
static/ holds the page (vanilla JS, no build step, nothing from the network).
"""
