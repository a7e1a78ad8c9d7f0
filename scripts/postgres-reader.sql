-- The token service's read-only role (compose; scripts/stack does the same for the local
-- stack). The call-control migrations grant it SELECT on the session tables.
CREATE ROLE ringing_reader LOGIN PASSWORD 'ringing_reader';
