# One image for the Dataflow workers and the Flex Template launcher (Google's "same image" pattern):
# the Beam SDK image with rsdt_beam and its dependencies installed, GDAL coming with rasterio's wheel,
# plus the Flex Template launcher binary. Build and push:
#
#   gcloud builds submit --tag europe-docker.pkg.dev/PROJECT/rsdt/rsdt-beam:0.1.0 .
#
# then run pipelines with --sdk_container_image=<that image> (no --setup_file needed), or build the
# Flex Template from it (README, "Run at scale"). EXTRAS=tensorflow adds TensorFlow for inference
# (rsdt_beam.pipelines.infer): `--build-arg EXTRAS=tensorflow`.

# Python 3.11 and Beam 2.77.0 as in constraints.txt: workers and launcher must match the submitting SDK
# (tests/test_deploy.py checks this tag against constraints.txt).
# The launcher base image is pinned to a dated release (Google's tag list: "Flex Templates base images").
ARG LAUNCHER_TAG=20260105_RC00
FROM gcr.io/dataflow-templates-base/python311-template-launcher-base:${LAUNCHER_TAG} AS template_launcher
FROM apache/beam_python3.11_sdk:2.77.0

ARG EXTRAS=""
COPY --from=template_launcher /opt/google/dataflow/python_template_launcher /opt/google/dataflow/python_template_launcher

WORKDIR /build
COPY constraints.txt pyproject.toml setup.py README.md LICENSE ./
COPY rsdt_beam rsdt_beam
# constraints.txt pins the tested environment, transitive dependencies included (tests/test_deploy.py runs
# this line in a clean venv); pyproject.toml says which packages (and which extras) the image needs. The
# package is installed, not put on PYTHONPATH.
RUN pip install --no-cache-dir --constraint constraints.txt ".${EXTRAS:+[$EXTRAS]}"
# The sources go; the import check runs from / so it can only find the installed package.
WORKDIR /template
RUN rm -rf /build \
    && cd / && python -c "import rasterio, rsdt_beam.stack.transforms, rsdt_beam.window.transforms, \
rsdt_beam.acquire.fetch, rsdt_beam.pipelines.scheduled; print(rsdt_beam.__file__, rasterio.__gdal_version__)"

# The Flex Template launcher runs this file with the template's parameters as --name=value flags;
# dependencies are in the image already, so the launcher must not stage or reinstall them.
COPY flex_template/main.py /template/main.py
ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/main.py
ENV PIP_NO_DEPS=True

# Workers start through the Beam SDK's boot entrypoint; Dataflow starts the template launcher itself.
ENTRYPOINT ["/opt/apache/beam/boot"]
