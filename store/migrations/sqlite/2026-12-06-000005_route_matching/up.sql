-- How a project's routes compare with request paths: `exact` or `case_insensitive`.
ALTER TABLE projects ADD COLUMN route_matching TEXT NOT NULL DEFAULT 'exact';
