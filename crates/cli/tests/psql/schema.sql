-- The schema the psql test describes: pgbench's tables, created with the
-- statements `pgbench -i` sends, and a table with every kind of column
-- constraint and a secondary index.
CREATE TABLE pgbench_history(tid int,bid int,aid    int,delta int,mtime timestamp,filler char(22));
CREATE TABLE pgbench_tellers(tid int not null,bid int,tbalance int,filler char(84)) WITH (fillfactor=100);
CREATE TABLE pgbench_accounts(aid    int not null,bid int,abalance int,filler char(84)) WITH (fillfactor=100);
CREATE TABLE pgbench_branches(bid int not null,bbalance int,filler char(88)) WITH (fillfactor=100);
ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid);
ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid);
ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid);
CREATE TABLE users (id bigint PRIMARY KEY, email varchar(100) UNIQUE, name text NOT NULL DEFAULT 'x', score int CHECK (score > 0), created timestamptz, born date, rating real, flag boolean DEFAULT true);
CREATE INDEX users_name_idx ON users (name);
