-- Endpoints may also sign with a GitHub-style X-Hub-Signature-256 header (opt-in).
ALTER TABLE endpoint ADD COLUMN github_signature BOOLEAN NOT NULL DEFAULT FALSE;
