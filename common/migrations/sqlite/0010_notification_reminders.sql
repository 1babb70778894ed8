-- Reminders (SQLite): a route with repeat_every_secs tells again about an alert that stays
-- OPEN, that often and never more. Keep in step with ../postgres/0010_notification_reminders.sql.
-- One row per (route, OPEN alert the route has told about): when the next reminder is due and
-- how many were made (the next one's delivery key is alert-<id>-reminder-<sent + 1>, so two
-- alerters making the same reminder record one delivery). A new message about the alert on
-- the route starts the wait again; a row found due for an alert no longer OPEN, or for a
-- route without reminders, is dropped.
CREATE TABLE IF NOT EXISTS notification_reminders (
    route_id  INTEGER NOT NULL,
    alert_id  INTEGER NOT NULL REFERENCES alerts (id),
    next_at   INTEGER NOT NULL,
    sent      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (route_id, alert_id)
);
CREATE INDEX IF NOT EXISTS notification_reminders_next_at ON notification_reminders (next_at);
