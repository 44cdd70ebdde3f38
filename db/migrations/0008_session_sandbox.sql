ALTER TABLE "sessions" ADD COLUMN "sandbox" text DEFAULT 'bubblewrap' NOT NULL;--> statement-breakpoint
-- every session that exists now ran before agentplane had a sandbox
UPDATE "sessions" SET "sandbox" = 'none';
