"""Model-written programs: isolated execution and the test-case reward."""
