"""perturbscope.report"""
