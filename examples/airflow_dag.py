"""Airflow DAG: retrain MovieLens embeddings nightly with embedpipe, warm-started from the last run.

Copy into your Airflow dags/ folder. It only shells out to `embedpipe`, so Airflow needs no
TensorFlow or Beam: point EMBEDPIPE at the virtual environment that has embedpipe installed.
A failed run leaves LATEST where it was, so downstream readers keep the previous vectors.
"""
import datetime

from airflow import DAG
from airflow.operators.bash import BashOperator

EMBEDPIPE = "/opt/embedpipe/.venv/bin/embedpipe"
OUTPUT = "/data/runs/movielens"          # or gs://bucket/runs/movielens with --runner DataflowRunner ...

with DAG(dag_id="embedpipe_movielens", schedule="0 3 * * *", start_date=datetime.datetime(2026, 1, 1),
         catchup=False, max_active_runs=1, default_args={"retries": 1}) as dag:
    retrain = BashOperator(
        task_id="retrain",
        # The run id is the logical date, so a retried task resumes the same run from its first unfinished stage.
        bash_command=(f"{EMBEDPIPE} run /opt/embedpipe/examples/movielens.yaml --output {OUTPUT} "
                      f"--run-id {{{{ ts_nodash }}}}Z --warm-start {OUTPUT}/LATEST"),
    )
    drift = BashOperator(
        task_id="drift_report",
        bash_command=f"{EMBEDPIPE} runs {OUTPUT} --keep 14",
    )
    retrain >> drift
