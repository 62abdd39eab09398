-- One index less written per event. Events are found by their id (the
-- webhook claim, redelivery by id) or by their message (a message's
-- timeline, through events_by_message on (message_id, seq)); no statement
-- looks an event up by its sequence number, which orders them and is
-- copied into its deliveries. So the id's unique index is the events' key
-- and the sequence's index goes: on PostgreSQL every event was three
-- B-tree inserts (the key on seq, the id, the message) and is now two.
-- The sequence numbers are still drawn from the identity, so they remain
-- unique and in the order events are inserted. Dropping an index is
-- instant, whatever the table's size.
ALTER TABLE events DROP CONSTRAINT events_pkey;
ALTER TABLE events REPLICA IDENTITY USING INDEX events_id_key;
