-- The workflow definition (states and context shape) of the binary that last wrote each saga,
-- as the workflow numbers it. A binary continues only sagas whose definition it knows
-- (`pcsaga check-upgrade`); rows from before this column were written at definition 1.

ALTER TABLE sagas ADD COLUMN definition INTEGER NOT NULL DEFAULT 1;
