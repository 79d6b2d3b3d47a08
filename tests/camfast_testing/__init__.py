"""Test machinery shared by camfast's test modules (not installed with camfast).

checks               devices, backends, input layouts and the one tolerance table
op_tester            OpTester and LayerOpTester: the tests every op gets, written once
layer_models         small models holding every camfast layer (production tests, distributed workers)
vision_transformers  a tiny ViT and a tiny Swin-like model for the explainer tests

A package with its own name, rather than a `utils` module, so that it cannot collide with an
installed package when pytest puts tests/ on sys.path.
"""
