"""perturbscope.experiments"""
