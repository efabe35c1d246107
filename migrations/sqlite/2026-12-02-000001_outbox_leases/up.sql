-- Who holds a mail's lease: only that worker may mark it sent or failed.
ALTER TABLE outbox ADD COLUMN leased_by TEXT;
