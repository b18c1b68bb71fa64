"""The end-to-end demo: synthesise, plan and preprocess, train, predict, evaluate — with the public commands."""
