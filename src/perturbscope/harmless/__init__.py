"""perturbscope.harmless"""
