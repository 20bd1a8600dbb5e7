-- `pcsaga list` uses an index for each filter, newest first: by status and by customer (the
-- first migration's indexes), by state, and unfiltered (by creation time).
CREATE INDEX sagas_state ON sagas (state, created_at);
CREATE INDEX sagas_created ON sagas (created_at);
