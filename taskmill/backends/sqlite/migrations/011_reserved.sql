-- Schema 10 -> 11: reserved for the `schedules` branch, which takes migration 011; this
-- placeholder only keeps the numbers without gaps on the `tags2` branch.  Delete it when
-- the branches are merged (the loader refuses two migrations to one version).
SELECT 1;
