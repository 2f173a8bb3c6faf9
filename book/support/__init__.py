"""The book's support code: what the chapters' experiments share (data, models, training)."""
