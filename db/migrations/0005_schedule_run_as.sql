-- a schedule's runs start as the key that last changed what they start; until now that was always its creator
ALTER TABLE "schedules" ADD COLUMN "run_as_key_id" text;--> statement-breakpoint
UPDATE "schedules" SET "run_as_key_id" = "created_by_key_id";--> statement-breakpoint
ALTER TABLE "schedules" ALTER COLUMN "run_as_key_id" SET NOT NULL;
