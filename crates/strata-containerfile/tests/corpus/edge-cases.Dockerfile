  # leading blanks before a comment
ARG BASE=alpine:3.20
from ${BASE} as Builder
  run echo "indented instruction" \
      && echo continued   \
	 # comment inside a continuation

      && echo "after blank line"
RUN echo "backslash kept \\"
ENV LEGACY_KEY legacy value with spaces
ENV QUOTED="a \"quoted\" value" SINGLE='single $NOT_EXPANDED'
LABEL "com.example.key"="value" multi.word="x y z"
ARG A=1 B C="three"
EXPOSE 80/tcp 443/tcp 53/udp
VOLUME ["/data"]
CMD ["sh", "-c", "echo $HOME"]
ENTRYPOINT exec top -b
HEALTHCHECK NONE
COPY [ "a b.txt", "/dst/" ]
RUN ["echo", "exec form"]
WORKDIR /a
WORKDIR b
USER 1000:1000
