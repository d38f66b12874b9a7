-- name: allocate_generation
-- description: one round trip; identity column, strictly increasing
INSERT INTO core.deployments (version, note) VALUES (%(version)s, %(note)s) RETURNING generation

-- name: generation_exists
SELECT EXISTS (SELECT 1 FROM core.deployments WHERE generation = %(generation)s)

-- name: list_generations
SELECT generation, version, note, created_at FROM core.deployments ORDER BY generation
