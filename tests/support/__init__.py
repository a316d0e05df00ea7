"""Helpers shared by test suites: real throwaway servers and the like."""
