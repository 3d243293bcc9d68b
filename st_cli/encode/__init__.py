"""Encoding jobs: input readers, batching, output writers and publishing, the run loop, shards, the
journal behind --resume, worker processes and Ray. The public entry point is `api.encode_file`."""
