ALTER TABLE "environments" ADD COLUMN "description" text;--> statement-breakpoint
ALTER TABLE "environments" ADD COLUMN "updated_at" timestamp with time zone DEFAULT now() NOT NULL;--> statement-breakpoint
-- an environment saved before updates existed was last changed when it was made
UPDATE "environments" SET "updated_at" = "created_at";
