# One image for the Dataflow workers and the Flex Template launcher (Google's "same image" pattern):
# the Beam SDK image with rsdt_beam and its dependencies installed, GDAL coming with rasterio's wheel,
# plus the Flex Template launcher binary. Build and push:
#
#   gcloud builds submit --tag europe-docker.pkg.dev/PROJECT/rsdt/rsdt-beam:0.1.0 .
#
# then run pipelines with --sdk_container_image=<that image> (no --setup_file needed), or build the
# Flex Template from it (flex_template/README section in README.md, "Dataflow and the Flex Template").
# EXTRAS=tensorflow adds TensorFlow for online inference (rsdt_beam/pipelines/infer.py).

# Python 3.11 and Beam 2.77.0 as in requirements.txt: workers and launcher must match the submitting SDK.
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:latest AS template_launcher
FROM apache/beam_python3.11_sdk:2.77.0

ARG EXTRAS=""
WORKDIR /template
COPY --from=template_launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

COPY requirements.txt setup.py ./
COPY rsdt_beam rsdt_beam
# requirements.txt pins the versions that resolve together; setup.py says which of them workers need.
RUN pip install --no-cache-dir --constraint requirements.txt ".${EXTRAS:+[$EXTRAS]}" \
    && python -c "import rasterio, apache_beam, rsdt_beam.schedule; print(rasterio.__gdal_version__)"

# The Flex Template launcher runs this file with the template's parameters as --name=value flags;
# dependencies are in the image already, so the launcher must not stage or reinstall them.
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/rsdt_beam/pipelines/scheduled.py
ENV PIP_NO_DEPS=True
ENV PYTHONPATH=/template

# Workers start through the Beam SDK's boot entrypoint; Dataflow starts the template launcher itself.
ENTRYPOINT ["/opt/apache/beam/boot"]
