#!/bin/sh
# Cloud Scheduler job: launches the rsdt_beam Flex Template (flex_template/) daily at 06:15 UTC with the
# request body in flex_template_launch.json (relative times: --end today --lookback 30d). The service
# account needs roles/dataflow.developer and access to the bucket. Dataflow does not start a second job
# with the same name while one runs, so launches of one output root do not overlap.
set -eu
PROJECT=${PROJECT:-my-project}
REGION=${REGION:-europe-west1}
SERVICE_ACCOUNT=${SERVICE_ACCOUNT:-rsdt-scheduler@${PROJECT}.iam.gserviceaccount.com}
gcloud scheduler jobs create http rsdt-beam-scheduled \
  --project "$PROJECT" --location "$REGION" \
  --schedule "15 6 * * *" --time-zone "Etc/UTC" \
  --uri "https://dataflow.googleapis.com/v1b3/projects/${PROJECT}/locations/${REGION}/flexTemplates:launch" \
  --http-method POST \
  --headers "Content-Type=application/json" \
  --message-body-from-file "$(dirname "$0")/flex_template_launch.json" \
  --oauth-service-account-email "$SERVICE_ACCOUNT" \
  --oauth-token-scope "https://www.googleapis.com/auth/cloud-platform"
