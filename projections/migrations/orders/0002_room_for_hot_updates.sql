-- An order row is inserted once and then moved forward four or five times (paid,
-- preparing, ready, completed), an account on every points movement. None of the
-- columns those updates change is indexed, so PostgreSQL can update in place (a
-- heap-only tuple: no new index entries) -- but only when the row's page has room.
-- Leaving 30 % of each page free keeps most updates HOT.
ALTER TABLE orders SET (fillfactor = 70);
ALTER TABLE loyalty_accounts SET (fillfactor = 70);
