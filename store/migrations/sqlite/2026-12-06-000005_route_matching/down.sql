ALTER TABLE projects DROP COLUMN route_matching;
