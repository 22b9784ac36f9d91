"""Validation of prediction tables, Spark-free: profiles, statistics, checks, the report.

``sparkinfer.spark.validate`` builds profiles from DataFrames with one Spark pass and calls `report.compare`.
"""
