"""A third-party pluggy plugin: a job and a route."""

from engine.hookspecs import hookimpl


@hookimpl
def engine_register_jobs(engine, daemon):
    engine.register("fakefs_hello", lambda job: job.write_json({"hello": "from fakefs"}))


@hookimpl
def engine_add_routes(app, engine):
    from engine.api.base import run_job

    class Hello:
        def on_get(self, req, resp):
            resp.content_type = "application/json"
            resp.data = run_job(engine, "fakefs_hello")

    app.add_route("/fakefs/hello", Hello())
