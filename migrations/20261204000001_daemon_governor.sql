-- What each daemon's rate governor looks like (JSON: per call class the budget, the allowed
-- rate, calls waiting, the pause in force, the last 429), written with every heartbeat so
-- that `pcsaga status` can show it. NULL for daemons of earlier releases.

ALTER TABLE daemons ADD COLUMN governor TEXT;
