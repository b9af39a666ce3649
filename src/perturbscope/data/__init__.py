"""perturbscope.data"""
