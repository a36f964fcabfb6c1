"""SQS -> Firehose forwarding, the producer, and grouping landed files into batches."""
