CREATE TABLE "schedules" (
	"id" text PRIMARY KEY NOT NULL,
	"team_id" text NOT NULL,
	"agent_id" text NOT NULL,
	"agent_version" integer,
	"environment_id" text,
	"prompt" text NOT NULL,
	"title" text,
	"metadata" jsonb NOT NULL,
	"budget" jsonb NOT NULL,
	"spec" jsonb NOT NULL,
	"policies" jsonb NOT NULL,
	"state" text NOT NULL,
	"note" text,
	"created_by_key_id" text NOT NULL,
	"created_by_role" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"deleted_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "sessions" ADD COLUMN "schedule_id" text;--> statement-breakpoint
ALTER TABLE "sessions" ADD COLUMN "scheduled_at" timestamp with time zone;--> statement-breakpoint
ALTER TABLE "schedules" ADD CONSTRAINT "schedules_team_id_teams_id_fk" FOREIGN KEY ("team_id") REFERENCES "public"."teams"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "schedules_team_idx" ON "schedules" USING btree ("team_id","id");--> statement-breakpoint
CREATE INDEX "sessions_schedule_idx" ON "sessions" USING btree ("schedule_id","id");